"""Core's accelerators (CPU, Apple MPS) and the ``Accelerator`` interface, under Lightning's import paths.

Others (CUDA, TPU) come from backend packages through entry points. Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.accelerators.cpu import CPUAccelerator
    from fabric_core.accelerators.mps import MPSAccelerator
    from fabric_core.plugins.accelerator import Accelerator

_LAZY = {
    "Accelerator": "fabric_core.plugins.accelerator",
    "CPUAccelerator": "fabric_core.accelerators.cpu",
    "MPSAccelerator": "fabric_core.accelerators.mps",
    "ACCELERATOR_REGISTRY": "fabric_core.registry_listing",
}

__all__ = ["ACCELERATOR_REGISTRY", "Accelerator", "CPUAccelerator", "MPSAccelerator"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        from fabric_core.registry import backend_class

        found = backend_class("accelerator", name)
        if found is not None:
            return found
        raise AttributeError(f"module 'fabric_core.accelerators' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
