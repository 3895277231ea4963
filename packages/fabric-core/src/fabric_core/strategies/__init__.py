"""Core's strategies (single device, DDP, FSDP, model parallel) under Lightning's import paths.

``fabric_core.strategies.DeepSpeedStrategy`` and the XLA strategies resolve through the
``fabric_core.strategies`` entry points of the installed backend packages (never imported by name
here); a missing package raises an error with its pip command. Core's names import on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy
    from fabric_core.strategies.data_parallel import DataParallelStrategy
    from fabric_core.strategies.ddp import DDPStrategy
    from fabric_core.strategies.fsdp import FSDPStrategy
    from fabric_core.strategies.mesh_config import MeshConfig
    from fabric_core.strategies.model_parallel import ModelParallelStrategy
    from fabric_core.strategies.process_group import ProcessGroupStrategy
    from fabric_core.strategies.single_device import SingleDeviceStrategy

_LAZY = {
    "Strategy": "fabric_core.plugins.strategy",
    "DDPStrategy": "fabric_core.strategies.ddp",
    "DataParallelStrategy": "fabric_core.strategies.data_parallel",
    "STRATEGY_REGISTRY": "fabric_core.registry_listing",
    "FSDPStrategy": "fabric_core.strategies.fsdp",
    "SingleDeviceStrategy": "fabric_core.strategies.single_device",
    "ProcessGroupStrategy": "fabric_core.strategies.process_group",
    "ModelParallelStrategy": "fabric_core.strategies.model_parallel",
    "MeshConfig": "fabric_core.strategies.mesh_config",
}
_ALIASES = {"ParallelStrategy": "ProcessGroupStrategy"}  # Lightning's name for the multi-process base

__all__ = [
    "STRATEGY_REGISTRY",
    "DDPStrategy",
    "DataParallelStrategy",
    "FSDPStrategy",
    "MeshConfig",
    "ModelParallelStrategy",
    "ParallelStrategy",
    "ProcessGroupStrategy",
    "SingleDeviceStrategy",
    "Strategy",
]


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    module = _LAZY.get(target)
    if module is not None:
        return getattr(importlib.import_module(module), target)
    from fabric_core.registry import backend_class

    found = backend_class("strategy", name)
    if found is None:
        raise AttributeError(f"module 'fabric_core.strategies' has no attribute {name!r}")
    return found


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
