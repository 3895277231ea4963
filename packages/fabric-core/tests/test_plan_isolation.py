"""Two Fabric objects in one process never share or rewire each other's strategy."""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
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
