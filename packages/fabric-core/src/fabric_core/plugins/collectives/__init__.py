"""Collectives on a process group of the user's choosing (names as in ``lightning.fabric.plugins.collectives``).

``TorchCollective().setup(...)`` joins (or reuses) the default ``torch.distributed`` group;
``create_group(ranks=[...])`` then gives an object whose collectives run among those ranks only, the
pattern of Lightning's decoupled reinforcement-learning example (one trainer group, one player).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.plugins.collectives.collective import Collective
    from fabric_core.plugins.collectives.single_device import SingleDeviceCollective
    from fabric_core.plugins.collectives.torch_collective import TorchCollective
    from fabric_core.utilities.types import CollectibleGroup

_LAZY = {
    "Collective": "fabric_core.plugins.collectives.collective",
    "SingleDeviceCollective": "fabric_core.plugins.collectives.single_device",
    "TorchCollective": "fabric_core.plugins.collectives.torch_collective",
    "CollectibleGroup": "fabric_core.utilities.types",
}

__all__ = ["CollectibleGroup", "Collective", "SingleDeviceCollective", "TorchCollective"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_core.plugins.collectives' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
