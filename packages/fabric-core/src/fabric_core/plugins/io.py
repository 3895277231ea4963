"""Checkpoint IO plugins at Lightning's import path (``lightning.fabric.plugins.io``).

``TorchCheckpointIO`` is core's (``fabric_core.checkpoint.torch_io``); backend ones (``XLACheckpointIO``)
come from the installed packages. Each name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CheckpointIO": "fabric_core.plugins.checkpoint_io",
    "TorchCheckpointIO": "fabric_core.checkpoint.torch_io",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    if name.startswith("_"):  # the import system asking for __path__ and the like: never load the registry
        raise AttributeError(f"module 'fabric_core.plugins.io' has no attribute {name!r}")
    from fabric_core.registry import backend_class

    for kind in ("strategy", "accelerator"):  # backends register these kinds; their packages export the IO classes
        found = backend_class(kind, name)
        if found is not None:
            return found
    raise AttributeError(f"module 'fabric_core.plugins.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
