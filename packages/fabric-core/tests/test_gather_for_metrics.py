"""fabric.gather_for_metrics: exact metrics over datasets whose length does not divide the world size."""

from __future__ import annotations

import pytest
import torch
from convenience_jobs import job, part
from fabric_core import Fabric


def test_one_process_returns_the_input_unchanged() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    data = {"preds": torch.arange(3), "pair": (torch.ones(2), 5)}
    assert fabric.gather_for_metrics(data) is data


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("devices", [2, 3])
def test_padded_samples_are_dropped_and_accuracy_is_exact(devices: int, preloaded_python) -> None:
    results = job("ddp", devices, preloaded_python)
    for rank in range(devices):
        gathered = part(results, rank, "gather")
        for length in (2 * devices + 1, 5 * devices - 1):
            assert length % devices != 0
            for sampler in ("sequential", "custom_sampler"):
                entry = gathered[f"{sampler}_{length}"]
                assert sorted(entry["seen"]) == list(range(length)), f"{sampler}, length {length}: {entry['seen']}"
                assert entry["correct"] == entry["exact"]
        assert gathered["uneven"] == [i for r in range(devices) for i in range(r + 1)]
        assert gathered["scalar"] == [float(r) for r in range(devices)]
        assert gathered["number"] == [10 * r for r in range(devices)]
        # without dataloader= nothing can be dropped: rank 0 says so, once
        assert len(gathered["warnings"]) == (1 if rank == 0 else 0)
