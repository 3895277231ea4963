"""Launching behaves as in Lightning Fabric 2.6: the function is checked up front, spawned workers own their weights."""

from __future__ import annotations

import json

import pytest
import torch
from fabric_core import Fabric


def test_a_function_without_parameters_is_refused_before_anything_starts():
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)

    def train():
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="needs to take at least one argument"):
        fabric.launch(train)
    assert not fabric._launched  # nothing was started; a corrected call may follow


def test_a_function_that_cannot_take_the_given_arguments_is_refused():
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
    with pytest.raises(TypeError, match="passes the Fabric object as the first argument"):
        fabric.launch(lambda fabric: None, 1)
    with pytest.raises(TypeError, match="passes the Fabric object as the first argument"):
        fabric.launch(lambda fabric, x: None, y=2)


def test_a_call_result_instead_of_a_function_gets_the_hint():
    with pytest.raises(TypeError, match=r"needs to be a callable.*fabric.launch\(train\) instead of fabric.launch\("):
        Fabric(accelerator="cpu").launch(5)


def test_the_result_of_calling_the_function_is_refused_even_when_it_is_none():
    """The slip ``fabric.launch(train(fabric))``: train ran already and returned None."""
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(TypeError, match="needs to be a callable, but got None"):
        fabric.launch(None)
    fabric.launch()  # the plain form still works


def test_launch_without_a_function_under_a_spawning_strategy_is_a_type_error():
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
    with pytest.raises(TypeError, match=r"`.launch\(\)` needs to be called with a function"):
        fabric.launch()
    assert not fabric._launched  # the corrected call still works afterwards


def test_sharded_model_is_deprecated_in_favour_of_init_module():
    fabric = Fabric(accelerator="cpu")
    with pytest.warns(DeprecationWarning, match="sharded_model"), fabric.sharded_model():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.device.type == "cpu"


def test_functions_that_fit_run():
    fabric = Fabric(accelerator="cpu")
    assert fabric.launch(lambda f, *rest, **kw: (f is fabric, rest, kw), 1, k=2) == (True, (1,), {"k": 2})


MEMORY_SHARING = r"""
import json, sys
import torch
from torch import nn
from fabric_core import Fabric

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.tied = nn.Linear(2, 2)
        self.tied.weight = self.layer.weight
        self.register_buffer("buffer", torch.ones(3))

def work(fabric, tensor, model):
    out = {
        "rank": fabric.global_rank,
        "tensor_shared": tensor.is_shared(),
        "weight_shared": model.layer.weight.is_shared(),
        "tied_shared": model.tied.weight.is_shared(),
        "buffer_shared": model.buffer.is_shared(),
        "still_tied": model.layer.weight.data_ptr() == model.tied.weight.data_ptr(),
    }
    if fabric.global_rank == 1:
        with torch.no_grad():
            model.layer.weight.add_(100.0)  # must reach neither rank 0 nor the parent
    fabric.barrier()
    out["weight_sum"] = float(model.layer.weight.sum())
    sys.stdout.write("RESULT " + json.dumps(out) + "\n"); sys.stdout.flush()
    fabric.barrier()

if __name__ == "__main__":
    model = Tied()
    with torch.no_grad():
        model.layer.weight.fill_(1.0)
    Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2).launch(work, torch.rand(4), model)
    sys.stdout.write("PARENT " + json.dumps({"weight_sum": float(model.layer.weight.sum())}) + "\n")
"""


@pytest.mark.multiprocess
def test_spawned_workers_do_not_share_model_memory(script_runner):
    proc = script_runner(MEMORY_SHARING, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        row["rank"]: row
        for row in (
            json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
        )
    }
    assert sorted(rows) == [0, 1]
    for row in rows.values():
        assert row["tensor_shared"]  # plain tensors still arrive through shared memory, as in Lightning
        assert not row["weight_shared"] and not row["tied_shared"] and not row["buffer_shared"]
        assert row["still_tied"]
    assert rows[0]["weight_sum"] == 4.0  # rank 1's in-place change did not reach rank 0
    assert rows[1]["weight_sum"] == 404.0
    parent = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PARENT ")).split(" ", 1)[1])
    assert parent["weight_sum"] == 4.0


def test_unsharing_keeps_a_module_that_was_never_shared_as_it_is():
    from fabric_core.launchers.multiprocessing import _unshare_modules

    model = torch.nn.Linear(2, 2)
    weight = model.weight
    pointer = weight.data_ptr()
    _unshare_modules(((model,), {"m": [model]}))
    assert model.weight is weight and weight.data_ptr() == pointer
    model.share_memory()
    _unshare_modules(((model,), {}))
    assert model.weight is weight and not weight.is_shared()
