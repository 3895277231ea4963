"""SPMD strategies for real on two virtual CPU devices (PJRT_DEVICE=CPU, CPU_NUM_DEVICES=2).

SPMD switches the whole process, so each run is a fresh interpreter. One process drives both
devices and sees global tensors: with the same global batch it must reproduce single-device training.
"""

from __future__ import annotations

import pytest
import torch
from xla_helpers import assert_close_states, requires_xla, run_scenario, train_reference

pytestmark = requires_xla()

TWO_CPU_DEVICES = {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"}
SPLIT_ON_BATCH = "{devices=[2,1]0,1}"  # first dimension split over devices 0 and 1


@pytest.mark.parametrize(
    ("strategy", "weight_sharding"),
    [("xla_spmd", "{replicated}"), ("xla_spmd_fsdp", SPLIT_ON_BATCH)],  # replicated vs. sharded on the larger dim
)
def test_spmd_trains_like_one_device_with_the_global_batch(tmp_path, strategy, weight_sharding):
    # 45 samples in batches of 8: the last batch (5) does not divide over 2 devices.
    result = run_scenario("spmd", strategy, "32-true", "45", str(tmp_path / "ckpt.pt"), env=TWO_CPU_DEVICES)
    ref_losses, ref_state = train_reference(n=45)
    assert result["strategy"] == strategy and result["world_size"] == 1
    assert result["num_batches"] == 6  # no distributed sampler: the one process reads every sample
    assert result["losses"][-1] < 0.25 * result["losses"][0]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(ref_losses), atol=1e-5, rtol=1e-4)
    assert_close_states({k: torch.tensor(v) for k, v in result["state"].items()}, ref_state)
    assert result["input_sharding"] == SPLIT_ON_BATCH
    assert result["weight_sharding"] == weight_sharding
    # Checkpoints hold full tensors, and loading keeps the parameters' sharding.
    assert result["saved_shapes"]["0.weight"] == result["weight_shape"] == [16, 6]
    assert result["weight_sharding_after_load"] == weight_sharding
    assert result["restored_exactly"]
    assert result["all_reduce"] == 2.0  # one process: collectives are identities
    assert any("cannot skip gradient synchronisation" in m for m in result["no_sync_warning"])


def test_spmd_with_bf16_mixed(tmp_path):
    result = run_scenario("spmd", "xla_spmd_fsdp", "bf16-mixed", "48", str(tmp_path / "ckpt.pt"), env=TWO_CPU_DEVICES)
    ref_losses, _ = train_reference()
    assert result["losses"][-1] < 0.3 * result["losses"][0]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(ref_losses), atol=0.05, rtol=0.1)
