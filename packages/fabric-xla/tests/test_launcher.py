"""The XLA launcher for real: two replicas on PyTorch/XLA's CPU device, driven from one worker process.

Launching, ranks, devices and data sharding work on the CPU device; collectives between the
replicas hang there (pytorch/xla 5005, 9089), so these replicas do not communicate.
"""

from __future__ import annotations

import json

from xla_helpers import requires_xla, run_scenario

pytestmark = requires_xla()

TWO_CPU_DEVICES = {"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "2"}


def test_two_replicas_get_their_ranks_devices_and_data_shards(tmp_path):
    result = run_scenario("launcher", "-1", str(tmp_path), env=TWO_CPU_DEVICES)["ok"]
    # rank 0's return value comes back to the caller
    assert result["rank"] == 0 and result["local_rank"] == 0 and result["world_size"] == 2
    assert result["device"] == "xla:0" and result["batch_device"] == "xla:0"
    assert result["on_device"] == 2.0
    # a DistributedSampler gave each replica its own half of the samples
    shards = [json.loads((tmp_path / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert shards[0] == result["seen"]
    assert len(shards[0]) == len(shards[1]) == 10
    assert sorted(shards[0] + shards[1]) == list(range(20))


def test_a_failing_replica_stops_the_job_and_is_named(tmp_path):
    result = run_scenario("launcher", "1", str(tmp_path), env=TWO_CPU_DEVICES)
    assert "error" in result, result
    assert "global rank 1 failed" in result["error"]
    assert "ValueError: replica 1 fails on purpose" in result["error"]
