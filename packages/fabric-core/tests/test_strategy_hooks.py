"""The optional hooks of the plugin interfaces that core reads: each one changes what Fabric does.

Small custom strategies and launchers stand in for the backends (XLA, DeepSpeed) that cannot run here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins import Launcher
from fabric_core.strategies.single_device import SingleDeviceStrategy
from torch import nn


class _Flat(nn.Module):
    """A wrapper that holds its own (flattened) copy of the parameters, as XLA's FSDP does."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.flat = nn.Parameter(torch.cat([p.detach().flatten() for p in module.parameters()]))
        self.inner = [module]  # a list: not registered, so its parameters are not the wrapper's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner[0](x)


def _owning_strategy(owns: bool) -> Any:
    class Owning(SingleDeviceStrategy):
        wrapper_owns_parameters = owns

        def __init__(self) -> None:
            super().__init__()
            self.loaded: list[dict[str, Any]] = []

        def setup_module(self, module: nn.Module) -> nn.Module:
            return _Flat(module)

        def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
            return {"gathered": torch.zeros(1)}

        def load_module_state_dict(self, module: nn.Module, state_dict: Any, strict: bool = True) -> None:
            self.loaded.append(dict(state_dict))

    return Owning()


@pytest.mark.parametrize("owns", [True, False])
def test_wrapper_owns_parameters_decides_where_parameters_and_state_come_from(owns: bool) -> None:
    fabric = Fabric(accelerator="cpu", strategy=_owning_strategy(owns))
    model = fabric.setup(nn.Linear(2, 1))
    names = [name for name, _ in model.named_parameters()]
    state = model.state_dict()
    model.load_state_dict(state)
    if owns:
        assert names == ["flat"]
        assert list(state) == ["gathered"]
        assert [list(s) for s in fabric.strategy.loaded] == [["gathered"]]  # back through the strategy
    else:
        assert names == ["weight", "bias"]
        assert list(state) == ["weight", "bias"]
        assert fabric.strategy.loaded == []


def test_zero_grad_is_the_set_up_optimizers_own() -> None:
    """Engines that own the gradients (DeepSpeed) hand back an optimizer whose zero_grad is theirs: it must run."""
    calls: list[bool] = []

    class EngineZeroing(torch.optim.SGD):
        def zero_grad(self, set_to_none: bool = True) -> None:
            calls.append(set_to_none)
            super().zero_grad(set_to_none=set_to_none)

    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 1)
    _, optimizer = fabric.setup(model, EngineZeroing(model.parameters(), lr=0.1))
    optimizer.zero_grad()
    optimizer.zero_grad(set_to_none=False)
    assert calls == [True, False]


class _ScriptLauncher(Launcher):
    def __init__(self, interactive: bool) -> None:
        self._interactive = interactive

    @property
    def is_interactive_compatible(self) -> bool:
        return self._interactive

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)


def _launching_strategy(interactive: bool) -> SingleDeviceStrategy:
    class Launching(SingleDeviceStrategy):
        def configure_launcher(self) -> None:
            self._launcher = _ScriptLauncher(interactive)

    return Launching()


@pytest.mark.parametrize("compatible", [True, False])
def test_interactive_sessions_refuse_launchers_that_rerun_the_script(
    monkeypatch: pytest.MonkeyPatch, compatible: bool
) -> None:
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)  # what a REPL sets
    if compatible:
        assert Fabric(accelerator="cpu", strategy=_launching_strategy(True)).world_size == 1
    else:
        with pytest.raises(MisconfigurationError, match="interactive session"):
            Fabric(accelerator="cpu", strategy=_launching_strategy(False))


def test_cpu_check_precision_names_the_valid_choices() -> None:
    from fabric_core.accelerators.cpu import CPUAccelerator

    CPUAccelerator().check_precision("bf16-mixed")
    with pytest.raises(MisconfigurationError, match="Supported: '32-true'"):
        CPUAccelerator().check_precision("fp8")
