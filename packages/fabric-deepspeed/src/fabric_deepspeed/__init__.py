"""fabric-deepspeed: DeepSpeed ZeRO strategies for fabric (``Fabric(strategy="deepspeed_stage_2")``).

Public names are imported on first use, so that ``import fabric_deepspeed`` stays cheap and works
where the ``deepspeed`` library is not installed (the strategy then says how to install it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fabric_deepspeed.__about__ import __version__

if TYPE_CHECKING:
    from fabric_deepspeed.conversion import convert_zero_checkpoint_to_fp32_state_dict
    from fabric_deepspeed.precision import DeepSpeedPrecision
    from fabric_deepspeed.strategy import DeepSpeedStrategy

_LAZY = {
    "DeepSpeedStrategy": "fabric_deepspeed.strategy",
    "DeepSpeedPrecision": "fabric_deepspeed.precision",
    "convert_zero_checkpoint_to_fp32_state_dict": "fabric_deepspeed.conversion",
}

__all__ = ["DeepSpeedPrecision", "DeepSpeedStrategy", "__version__", "convert_zero_checkpoint_to_fp32_state_dict"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_deepspeed' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
