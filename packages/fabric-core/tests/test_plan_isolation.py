"""Two Fabric objects in one process never share or rewire each other's strategy."""

from __future__ import annotations

import copy

import pytest
import torch
from fabric_core import Fabric
from fabric_core.accelerators.cpu import CPUAccelerator
from fabric_core.environments.local import LocalEnvironment
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins import HalfPrecision
from fabric_core.plugins.strategy import Strategy
from fabric_core.strategies.single_device import SingleDeviceStrategy
from torch import nn


def test_a_strategy_object_serves_one_fabric():
    strategy = SingleDeviceStrategy(device=torch.device("cpu"))
    first = Fabric(accelerator="cpu", strategy=strategy, precision="bf16-true")
    assert first.strategy is strategy  # used as given, as in Lightning
    with pytest.raises(MisconfigurationError, match="already given to another Fabric"):
        Fabric(accelerator="cpu", strategy=strategy, precision="64-true")
    # The refused second Fabric changed nothing in the first one.
    assert first.strategy.precision.name == "bf16-true"
    model = first.setup(nn.Linear(2, 2))
    assert model.weight.dtype == torch.bfloat16


def test_validate_runs_before_the_launcher_is_chosen():
    calls: list[str] = []

    class Recording(SingleDeviceStrategy):
        def validate(self) -> None:
            assert self.accelerator is not None and self.precision is not None
            calls.append("validate")

        def configure_launcher(self) -> None:
            calls.append("configure_launcher")
            super().configure_launcher()

    Fabric(accelerator="cpu", strategy=Recording(device=torch.device("cpu")))
    assert calls == ["validate", "configure_launcher"]


def test_validate_is_part_of_the_interface():
    assert callable(Strategy.validate)


def _state(obj: object) -> dict[str, object]:
    return {name: copy.deepcopy(value) for name, value in vars(obj).items()}


def test_plan_resolution_leaves_the_objects_it_was_given_unchanged():
    accelerator = CPUAccelerator()
    precision = HalfPrecision("bf16-true")
    environment = LocalEnvironment()
    given = [accelerator, precision, environment]
    before = [_state(obj) for obj in given]
    first = Fabric(accelerator=accelerator, plugins=[precision, environment])
    # the same accelerator and environment, another precision: a second plan, not a rewiring of the first
    second = Fabric(accelerator=accelerator, precision="64-true", plugins=[environment])
    assert [_state(obj) for obj in given] == before
    assert first.strategy.precision is precision and second.strategy.precision is not precision
    assert first.strategy.precision.name == "bf16-true" and second.strategy.precision.name == "64-true"
    first.setup(nn.Linear(2, 2))
    second.setup(nn.Linear(2, 2))
    assert [_state(obj) for obj in given] == before


def test_two_fabrics_with_different_precision_do_not_interfere():
    default_dtype = torch.get_default_dtype()
    mixed = Fabric(accelerator="cpu", precision="bf16-mixed")
    double = Fabric(accelerator="cpu", precision="64-true")
    with double.init_module():
        double_model = nn.Linear(4, 4)
    mixed_model = mixed.setup(nn.Linear(4, 4))
    double_model, double_optimizer = double.setup(double_model, torch.optim.SGD(double_model.parameters(), lr=0.1))
    assert torch.get_default_dtype() == default_dtype  # 64-true's default dtype stays inside its own contexts
    x = torch.randn(3, 4)
    for _ in range(2):  # interleaved steps: neither Fabric's autocast or dtype leaks into the other's
        mixed_out = mixed_model(x)
        double_out = double_model(x)
        # computed under bf16 autocast, returned as float32 (as in Lightning): every value is a bf16 value
        assert mixed_out.dtype == torch.float32
        assert torch.equal(mixed_out, mixed_out.to(torch.bfloat16).float())
        assert not torch.equal(mixed_out, mixed_model.module(x))  # the plain float32 forward differs
        # computed in float64, returned in the default dtype (as in Lightning)
        assert double_out.dtype == torch.float32
        assert torch.equal(double_out, double_model.module(x.double()).float())
        double.backward(double_out.sum())
        double_optimizer.step()
        double_optimizer.zero_grad()
        assert double_model.weight.dtype == torch.float64
        assert mixed_model.weight.dtype == torch.float32  # mixed precision keeps float32 weights
    assert torch.get_default_dtype() == default_dtype
