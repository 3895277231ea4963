"""fabric.accumulate in real processes: N micro-batches of B equal one batch of N*B, one all-reduce per window."""

from __future__ import annotations

import pytest
from convenience_jobs import job, part

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]

B, N, BATCHES, EPOCHS = 2, 3, 7, 2  # as in convenience_jobs.SCRIPT: windows of 3, 3 and a short 1 per epoch
WINDOWS_PER_EPOCH = 3
EXPECTED_BOUNDARIES = [[1, 3, False], [2, 3, False], [3, 3, True]] * 2 + [[1, 1, True]]


@pytest.mark.parametrize(("strategy", "devices"), [("ddp", 2), ("ddp", 3), ("fsdp", 2)])
def test_accumulated_weights_equal_one_large_batch(strategy: str, devices: int, preloaded_python) -> None:
    results = job(strategy, devices, preloaded_python)
    for rank in range(devices):
        acc = part(results, rank, "accumulate")
        assert acc["moved"] > 1e-3, "training did not change the weights: the comparison would prove nothing"
        assert acc["max_diff"] < 1e-6, (
            f"rank {rank}: weights differ from the one-large-batch reference by {acc['max_diff']}"
        )
        assert acc["boundaries"] == EXPECTED_BOUNDARIES * EPOCHS


@pytest.mark.parametrize("devices", [2, 3])
def test_ddp_all_reduces_once_per_window(devices: int, preloaded_python) -> None:
    results = job("ddp", devices, preloaded_python)
    for rank in range(devices):
        assert part(results, rank, "accumulate")["reduces"] == WINDOWS_PER_EPOCH * EPOCHS
