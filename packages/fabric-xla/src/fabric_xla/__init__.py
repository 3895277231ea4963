"""TPU / PyTorch-XLA backend for fabric: accelerator ``"tpu"``/``"xla"`` and the XLA strategies.

Importing this package is cheap and works without torch_xla; torch_xla is imported only when an XLA
device is really used, and a missing or mismatched torch_xla then raises ``XLAUnavailableError``
with the versions and the pip command that fixes it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fabric_xla.__about__ import __version__
from fabric_xla.errors import XLAUnavailableError

_LAZY = {
    "XLAAccelerator": "fabric_xla.accelerator",
    "XLALauncher": "fabric_xla.launcher",
    "XLAReplicaError": "fabric_xla.launcher",
    "SingleXLAStrategy": "fabric_xla.strategies.single",
    "XLAStrategy": "fabric_xla.strategies.data_parallel",
    "XLAFSDPStrategy": "fabric_xla.strategies.fsdp",
    "XLASPMDStrategy": "fabric_xla.strategies.spmd",
    "sharded_parameters": "fabric_xla.strategies.fsdp",
    "consolidate_checkpoint": "fabric_xla.consolidate",
    "xla_precision": "fabric_xla.precision",
}

__all__ = ["XLAUnavailableError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_xla' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
