"""Fabric's share of the default process group: who destroys it, and hooks installed once per process.

Two jobs of two real processes under torchrun (gloo on loopback), and one-process groups in this process
(strategy="ddp" on one device still creates a real gloo group over a real TCPStore).
"""

from __future__ import annotations

import atexit
import json
import sys

import pytest
import torch
import torch.distributed as dist
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_core.launchers.failures import FAILURE_DIR_ENV, FailureRecorder

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]

# Printed by every rank: what the user of two Fabric objects (or of their own group) relies on.
TRACK_EXIT_HOOKS = r"""
import atexit, json, sys

# Fabric's exit hooks registered and not unregistered since here (atexit itself cannot list them).
LIVE_EXIT_HOOKS = []
_register, _unregister = atexit.register, atexit.unregister
def _track_register(func, *args, **kwargs):
    if (getattr(func, "__module__", None) or "").startswith("fabric_core"):
        LIVE_EXIT_HOOKS.append(func)
    return _register(func, *args, **kwargs)
def _track_unregister(func):
    LIVE_EXIT_HOOKS[:] = [f for f in LIVE_EXIT_HOOKS if f != func]
    return _unregister(func)
atexit.register, atexit.unregister = _track_register, _track_unregister
"""

TWO_FABRICS = (
    TRACK_EXIT_HOOKS
    + r"""
import torch, torch.distributed as dist
from torch import nn
from fabric_core import Fabric
from fabric_core.launchers.failures import FailureRecorder

def hooks():
    chain, hook = 0, sys.excepthook
    while isinstance(hook, FailureRecorder):
        chain, hook = chain + 1, hook._previous
    return {"exit_hooks": len(LIVE_EXIT_HOOKS), "recorders": chain}

out = {"before": hooks(), "original_hook": True}
original = sys.excepthook
first = Fabric(accelerator="cpu", strategy="ddp", precision="bf16-true")
first.launch()
second = Fabric(accelerator="cpu", strategy="ddp", precision="64-true")
second.launch()
out["both"] = hooks()
rank = first.global_rank
out["rank"] = rank
first_model = first.setup(nn.Linear(2, 2))
second_model = second.setup(nn.Linear(2, 2))
out["dtypes"] = [str(first_model.weight.dtype), str(second_model.weight.dtype)]
first.strategy.teardown()
out["after_first"] = hooks()
out["initialized_after_first"] = dist.is_initialized()
out["second_sum"] = second.all_reduce(torch.tensor(float(rank + 1)), reduce_op="sum").item()
out["second_dtype_after"] = str(second.setup(nn.Linear(2, 2)).weight.dtype)
second.strategy.teardown()
out["after_both"] = hooks()
out["initialized_after_both"] = dist.is_initialized()
out["original_hook"] = sys.excepthook is original
sys.stdout.write("RESULT " + json.dumps(out) + "\n"); sys.stdout.flush()
"""
)

USER_GROUP = (
    TRACK_EXIT_HOOKS
    + r"""
import torch, torch.distributed as dist
from fabric_core import Fabric

dist.init_process_group("gloo")
original, exit_hooks = sys.excepthook, len(LIVE_EXIT_HOOKS)
fabric = Fabric(accelerator="cpu", strategy="ddp")
fabric.launch()
out = {"rank": fabric.global_rank, "fabric_sum": fabric.all_reduce(torch.tensor(1.0), reduce_op="sum").item()}
out["hook_while_used"] = sys.excepthook is not original
fabric.strategy.teardown()
out["initialized_after"] = dist.is_initialized()
value = torch.tensor(float(fabric.global_rank + 1))
dist.all_reduce(value)
out["user_sum"] = value.item()
out["exit_hooks_added"] = len(LIVE_EXIT_HOOKS) - exit_hooks
out["original_hook"] = sys.excepthook is original
dist.destroy_process_group()
sys.stdout.write("RESULT " + json.dumps(out) + "\n"); sys.stdout.flush()
"""
)


def _torchrun_job(script_runner, source: str) -> dict[int, dict]:
    """Each rank's ``RESULT`` row of ``source`` run by torchrun on 2 processes (which must both succeed)."""
    proc = script_runner(source, command=TORCHRUN, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    results = {row["rank"]: row for row in rows}
    assert sorted(results) == [0, 1], proc.stdout
    return results


@pytest.mark.multiprocess
def test_two_fabrics_in_one_process_share_the_group_and_hooks(script_runner):
    for row in _torchrun_job(script_runner, TWO_FABRICS).values():
        before = row["before"]
        # one exit hook and one failure recorder for the process, however many Fabric objects use the group
        assert row["both"] == {"exit_hooks": before["exit_hooks"] + 1, "recorders": 1}
        assert row["dtypes"] == ["torch.bfloat16", "torch.float64"]
        # tearing down one Fabric leaves the other's group working, and its own precision untouched
        assert row["initialized_after_first"] is True
        assert row["after_first"] == row["both"]
        assert row["second_sum"] == 3.0
        assert row["second_dtype_after"] == "torch.float64"
        # the last one destroys the group Fabric created, and takes its hooks with it
        assert row["initialized_after_both"] is False
        assert row["after_both"] == before
        assert row["original_hook"] is True


@pytest.mark.multiprocess
def test_a_group_the_user_created_survives_fabric_teardown(script_runner):
    for row in _torchrun_job(script_runner, USER_GROUP).values():
        assert row["fabric_sum"] == 2.0
        assert row["hook_while_used"] is True  # torchrun's error file gets this rank's exception while Fabric runs
        assert row["initialized_after"] is True
        assert row["user_sum"] == 3.0
        assert row["exit_hooks_added"] == 0  # the user's group is the user's to destroy
        assert row["original_hook"] is True


# ----------------------------------------------------------------------------- one process, in this test process
@pytest.fixture
def live_exit_hooks(monkeypatch) -> list:
    """Fabric's exit hooks registered and not unregistered during the test (atexit itself cannot list them)."""
    live: list = []
    register, unregister = atexit.register, atexit.unregister

    def tracked_register(func, *args, **kwargs):
        if (getattr(func, "__module__", None) or "").startswith("fabric_core"):
            live.append(func)
        return register(func, *args, **kwargs)

    def tracked_unregister(func):
        live[:] = [f for f in live if f != func]
        return unregister(func)

    monkeypatch.setattr(atexit, "register", tracked_register)
    monkeypatch.setattr(atexit, "unregister", tracked_unregister)
    return live


@pytest.fixture
def no_default_group():
    assert not dist.is_initialized()
    yield
    if dist.is_initialized():  # a failed test must not leave its group to the next one
        dist.destroy_process_group()


def _one_rank_fabric(precision: str = "32-true") -> Fabric:
    fabric = Fabric(accelerator="cpu", strategy="ddp", devices=1, precision=precision)
    fabric.launch()
    return fabric


def test_the_last_fabric_destroys_the_group_fabric_created(no_default_group, live_exit_hooks, monkeypatch, tmp_path):
    monkeypatch.setenv(FAILURE_DIR_ENV, str(tmp_path))  # as under Fabric's launcher: a recorder is installed
    original = sys.excepthook
    first, second = _one_rank_fabric(), _one_rank_fabric()
    assert isinstance(sys.excepthook, FailureRecorder)
    assert not isinstance(sys.excepthook._previous, FailureRecorder)  # one recorder, chained once
    assert len(live_exit_hooks) == 1
    first.strategy.teardown()
    first.strategy.teardown()  # a second teardown gives nothing back twice
    assert dist.is_initialized()
    assert second.all_reduce(torch.tensor(2.0), reduce_op="sum").item() == 2.0
    second.strategy.teardown()
    assert not dist.is_initialized()
    assert sys.excepthook is original
    assert live_exit_hooks == []
    # a new Fabric afterwards creates a new group of its own
    third = _one_rank_fabric()
    assert dist.is_initialized() and third.all_reduce(torch.tensor(1.0), reduce_op="sum").item() == 1.0
    assert len(live_exit_hooks) == 1
    third.strategy.teardown()
    assert not dist.is_initialized()
    assert sys.excepthook is original  # torch's "[rankN]" hook of each group did not pile up either


def test_a_hook_chained_on_top_of_fabric_is_kept_at_teardown(no_default_group, monkeypatch, tmp_path):
    monkeypatch.setenv(FAILURE_DIR_ENV, str(tmp_path))
    original = sys.excepthook
    fabric = _one_rank_fabric()
    recorder = sys.excepthook
    calls = []

    def users_hook(kind, value, tb):
        calls.append(kind)
        recorder(kind, value, tb)

    sys.excepthook = users_hook
    try:
        fabric.strategy.teardown()
        assert sys.excepthook is users_hook  # not unhooked from under the user
        sys.excepthook(ValueError, ValueError("x"), None)
        assert calls == [ValueError]
        assert list(tmp_path.iterdir()) == []  # the removed recorder no longer records
    finally:
        sys.excepthook = original


def test_a_group_created_before_fabric_is_used_and_kept(no_default_group, live_exit_hooks):
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    group = dist.GroupMember.WORLD
    fabric = _one_rank_fabric()
    assert dist.GroupMember.WORLD is group  # used, not replaced
    assert live_exit_hooks == []  # the user's group is the user's to destroy
    fabric.strategy.teardown()
    assert dist.is_initialized() and dist.GroupMember.WORLD is group
    dist.destroy_process_group()


def test_a_group_of_another_shape_is_refused(no_default_group, monkeypatch):
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    # as if torchrun had started this process as rank 1 of 2
    for name, value in {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("GROUP_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    fabric = Fabric(accelerator="cpu", strategy="ddp")
    with pytest.raises(MisconfigurationError, match=r"rank 0 of world size 1.*rank 1 of 2"):
        fabric.launch()
    assert dist.is_initialized()  # refused, not destroyed
    dist.destroy_process_group()
