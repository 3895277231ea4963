"""Mistakes users make get a clear error or warning instead of silently wrong training."""

from __future__ import annotations

import warnings

import pytest
import torch
from fabric_core import Fabric
from fabric_core.precision.mixed import MixedPrecision
from torch import nn


def _scaled_fabric() -> Fabric:
    # float16 autocast with a real gradient scaler (torch's CPU GradScaler), as fabric-cuda does on GPUs
    precision = MixedPrecision("16-mixed", torch.bfloat16, "cpu", scaler=torch.amp.GradScaler("cpu"))
    return Fabric(accelerator="cpu", plugins=[precision])


def test_plain_loss_backward_is_refused_when_a_scaler_is_active():
    fabric = _scaled_fabric()
    model = nn.Linear(2, 1)
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match=r"use fabric.backward\(loss\)"):
        fmodel(torch.randn(3, 2)).sum().backward()
    fabric.backward(fmodel(torch.randn(3, 2)).sum())  # the right way works
    fopt.step()


def test_stepping_the_original_optimizer_is_refused_when_a_scaler_is_active():
    fabric = _scaled_fabric()
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fmodel, fopt = fabric.setup(model, optimizer)
    fabric.backward(fmodel(torch.randn(3, 2)).sum())
    with pytest.raises(RuntimeError, match="not on the one it returned"):
        optimizer.step()
    fopt.step()


def test_plain_backward_is_fine_in_full_precision():
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 1)
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fmodel(torch.randn(3, 2)).sum().backward()
    fopt.step()


class WithHelper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x):
        return self.layer(x)

    def decode(self, x):
        return self.layer(x) * 2

    def describe(self) -> str:
        return "no forward here"


def test_method_running_the_model_outside_the_wrapper_raises():
    """As in Lightning: a method that runs submodules behind the wrapper's back is an error, with the fix."""
    fabric = Fabric(accelerator="cpu")
    model = WithHelper()
    fmodel = fabric.setup(model)
    # emulate a strategy that wraps the module (DDP/FSDP) without starting processes
    object.__setattr__(fmodel, "_forward_call", nn.Sequential(model))
    for _ in range(2):  # every time, not once
        with pytest.raises(RuntimeError, match=r"mark_forward_method\('decode'\)"):
            fmodel.decode(torch.ones(1, 2))
    assert not any(m._forward_pre_hooks for m in model.modules()), "the tracking hooks were removed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fmodel.describe() == "no forward here"  # methods that run no submodule are fine
    fmodel.mark_forward_method("decode")
    assert fmodel.decode(torch.ones(1, 2)).shape == (1, 2)


def test_launch_is_needed_before_setup_with_several_processes():
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
    with pytest.raises(RuntimeError, match=r"call fabric.launch\(\)"):
        fabric.setup(nn.Linear(1, 1))
    with pytest.raises(Exception, match="needs the function"):
        Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2).launch()
