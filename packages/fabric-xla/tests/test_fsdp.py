"""Strategy "xla_fsdp" (torch_xla's FSDP), for real with one replica on the CPU device.

torch_xla's FSDP with one replica needs a host with one device (CPU_NUM_DEVICES=1), so it runs in a
fresh interpreter. Several replicas need collectives that hang on the CPU device: see test_tpu.py.
"""

from __future__ import annotations

import pytest
import torch
from fabric_core.connector import resolve_plan
from fabric_core.errors import MisconfigurationError
from xla_helpers import requires_xla, run_scenario, train_reference

pytestmark = requires_xla()


def test_trains_saves_shards_restores_and_merges(tmp_path):
    folder, merged_file = tmp_path / "ckpt", tmp_path / "full.pt"
    result = run_scenario("fsdp", str(folder), str(merged_file), env={"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "1"})

    ref_losses, _ = train_reference()
    assert result["losses"][-1] < 0.25 * result["losses"][0]
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(ref_losses), atol=1e-5, rtol=1e-4)
    # The optimizer was built from model.parameters(): the set-up module lists the wrapper's shards.
    assert result["parameter_names"] and all(n.startswith("_fsdp_shard") for n in result["parameter_names"])
    assert result["state_keys_sharded"] and result["sharded_parameters_alias"] and result["state_dict_round_trip"]
    assert sorted(p.name for p in folder.iterdir()) == ["fabric-manifest.json", "rank-00000-of-00001.pt"]
    assert result["after"] == result["before"]  # restored exactly
    assert result["remainder"] == {"epoch": 3}
    assert result["url_remainder"] == {"epoch": 4} and result["url_after"] == result["before"]
    assert result["url_merged_keys"] == ["epoch", "model"]
    assert "saves its folder of shards synchronously" in result["async_refused"]
    assert "is damaged" in result["damaged"] and "rank-00000-of-00001.pt" in result["damaged"]
    # The merged file is an ordinary checkpoint: plain torch loads it into the unwrapped model.
    assert result["merged_keys"] == ["epoch", "model"]  # optimizer shards are not merged
    assert result["plain_state_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    torch.testing.assert_close(torch.tensor(result["plain"]), torch.tensor(result["before"]), atol=1e-6, rtol=1e-5)
    # Optimizers built before sharding are refused with the way to do it.
    assert "Set up the model first" in result["refused"]["joint"]
    assert "not the sharded parameters" in result["refused"]["stale"]


def test_one_replica_on_a_multi_device_cpu_host_is_refused(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")
    with pytest.raises(MisconfigurationError, match=r"CPU_NUM_DEVICES=1.*xla_spmd_fsdp"):
        resolve_plan(accelerator="tpu", strategy="xla_fsdp", devices=1)
