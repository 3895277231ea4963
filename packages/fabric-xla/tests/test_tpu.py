"""On a real TPU (the `tpu` nox leg): several replicas with XLA collectives, which hang on the CPU device.

Each job runs in a fresh interpreter: xmp.spawn refuses to start once the pytest process has started
the XLA runtime. TPU matmuls run float32 through bfloat16 passes by default, hence the tolerances.
"""

from __future__ import annotations

import pytest
import torch
from xla_helpers import make_data, make_model, run_scenario, train_reference

pytestmark = pytest.mark.tpu
TPU = {"PJRT_DEVICE": "TPU"}
TPU_ATOL = 2e-2


def test_data_parallel_replicas_agree_and_match_the_global_batch(tmp_path):
    from fabric_xla import XLAAccelerator

    world = XLAAccelerator.auto_device_count()
    n = 8 * world * 3  # three steps per epoch, every replica a full batch of 8
    result = run_scenario("tpu_jobs", "data_parallel", str(n), str(tmp_path / "ckpt.pt"), env=TPU, timeout=600)
    assert result["world"] == world
    # after every step the replicas hold the same weights
    assert max(result["checksums"]) - min(result["checksums"]) < 1e-4
    # averaged gradients over the shards == one device on the whole global batch
    _, ref_state = train_reference(n=n, batch_size=8 * world)
    assert result["losses"][-1] < 0.5 * result["losses"][0]
    for key, value in ref_state.items():
        torch.testing.assert_close(torch.tensor(result["state"][key]), value, atol=TPU_ATOL, rtol=TPU_ATOL)
    assert result["mean_rank"] == pytest.approx((world - 1) / 2)
    assert result["max_rank"] == world - 1
    assert result["from_last"] == {"rank": world - 1}
    assert result["tensor_from_last"] == [float(world - 1)] * 3
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert saved["world"] == world and saved["model"]["0.weight"].device.type == "cpu"


def test_fsdp_replicas_train_save_shards_and_merge(tmp_path):
    result = run_scenario("tpu_jobs", "fsdp", str(tmp_path / "ckpt"), str(tmp_path / "full.pt"), env=TPU, timeout=600)
    world = result["world"]
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["fabric-manifest.json", *(f"rank-{r:05d}-of-{world:05d}.pt" for r in range(world))]
    assert result["losses"][-1] < 0.5 * result["losses"][0]
    torch.testing.assert_close(torch.tensor(result["after"]), torch.tensor(result["before"]), atol=0, rtol=0)
    plain = make_model()
    plain.load_state_dict(torch.load(tmp_path / "full.pt", weights_only=True)["model"])
    torch.testing.assert_close(plain(make_data()[0]), torch.tensor(result["before"]), atol=TPU_ATOL, rtol=TPU_ATOL)


def test_a_failing_replica_stops_replicas_waiting_in_a_collective():
    from fabric_xla import XLAAccelerator

    if XLAAccelerator.auto_device_count() < 2:
        pytest.skip("needs a TPU host with at least two devices")
    result = run_scenario("tpu_jobs", "failing", env=TPU, timeout=300)
    assert "global rank 1 failed" in result["error"] and "replica 1 fails on purpose" in result["error"]


@pytest.mark.parametrize("strategy", ["xla_spmd", "xla_spmd_fsdp"])
def test_spmd_over_all_tpu_devices(tmp_path, strategy):
    result = run_scenario("spmd", strategy, "32-true", "48", str(tmp_path / "ckpt.pt"), env=TPU, timeout=600)
    ref_losses, _ = train_reference()
    assert result["restored_exactly"]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(ref_losses), atol=TPU_ATOL, rtol=TPU_ATOL)


def test_one_replica_on_one_tpu_chip_with_fsdp(tmp_path):
    result = run_scenario("fsdp", str(tmp_path / "ckpt"), str(tmp_path / "full.pt"), env=TPU, timeout=600)
    assert result["losses"][-1] < 0.5 * result["losses"][0]
    assert result["after"] == result["before"]
