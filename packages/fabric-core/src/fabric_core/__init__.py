"""fabric-core: keep your PyTorch loop; run it on any hardware and strategy.

Public names are imported on first use, so that ``import fabric_core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fabric_core.__about__ import __version__

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.utilities.seed import seed_everything
    from fabric_core.wrappers.module import is_wrapped

_LAZY = {
    "Fabric": "fabric_core.fabric",
    "seed_everything": "fabric_core.utilities.seed",
    "is_wrapped": "fabric_core.wrappers.module",
}

__all__ = ["Fabric", "__version__", "is_wrapped", "seed_everything"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
