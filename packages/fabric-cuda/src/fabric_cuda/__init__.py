"""fabric-cuda: the NVIDIA GPU accelerator for fabric (``Fabric(accelerator="cuda")``).

Public names are imported on first use, so that ``import fabric_cuda`` stays cheap and works on a
machine without a GPU, a driver, or a CUDA build of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fabric_cuda.__about__ import __version__

if TYPE_CHECKING:
    from fabric_cuda.accelerator import CUDAAccelerator
    from fabric_cuda.device_count import is_cuda_available, num_cuda_devices
    from fabric_cuda.precision import CUDAMixedPrecision
    from fabric_cuda.usable_devices import find_usable_cuda_devices

_LAZY = {
    "CUDAAccelerator": "fabric_cuda.accelerator",
    "CUDAMixedPrecision": "fabric_cuda.precision",
    "find_usable_cuda_devices": "fabric_cuda.usable_devices",
    "is_cuda_available": "fabric_cuda.device_count",
    "num_cuda_devices": "fabric_cuda.device_count",
}

__all__ = [
    "CUDAAccelerator",
    "CUDAMixedPrecision",
    "__version__",
    "find_usable_cuda_devices",
    "is_cuda_available",
    "num_cuda_devices",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_cuda' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
