"""Helpers that scripts import, under the names and paths of ``lightning.fabric.utilities``.

Every name is imported on first use, so that importing this package costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it (one line each, so that other helpers can be added beside these)
_LAZY: dict[str, str] = {
    "AttributeDict": "fabric_core.utilities.attribute_dict",
    "move_data_to_device": "fabric_core.utilities.apply_func",
    "rank_zero_debug": "fabric_core.utilities.rank_zero",
    "rank_zero_deprecation": "fabric_core.utilities.rank_zero",
    "rank_zero_info": "fabric_core.utilities.rank_zero",
    "rank_zero_only": "fabric_core.utilities.rank_zero",
    "rank_zero_warn": "fabric_core.utilities.rank_zero",
    "seed_everything": "fabric_core.utilities.seed",
    "SpikeDetection": "fabric_core.utilities.spike",
    "suggested_max_num_workers": "fabric_core.utilities.cpus",
    "Throughput": "fabric_core.utilities.throughput",
    "ThroughputMonitor": "fabric_core.utilities.throughput",
    "get_available_flops": "fabric_core.utilities.throughput",
    "find_executable_batch_size": "fabric_core.utilities.batch_size_finder",
    "measure_flops": "fabric_core.utilities.throughput",
    "disable_possible_user_warnings": "fabric_core.utilities.warnings",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fabric_core.utilities' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(_LAZY)
