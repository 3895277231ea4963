"""Loggers under Lightning's import path (``lightning.fabric.loggers`` -> ``fabric_core.loggers``).

``Logger`` is core's interface. ``TensorBoardLogger``, ``CSVLogger``, ``MLflowLogger``, ... come from the
packages that register them under the ``fabric_core.loggers`` entry-point group (fabric-loggers, or a third
party), imported on first use; when fabric-loggers is missing the error gives the pip command.
"""

from __future__ import annotations

from typing import Any

from fabric_core.loggers._entry_points import GROUP, available_loggers, logger_from_name
from fabric_core.plugins.logger import Logger, NoOpExperiment

__all__ = [
    "GROUP",
    "CSVLogger",
    "Logger",
    "MLflowLogger",
    "NoOpExperiment",
    "TensorBoardLogger",
    "WandbLogger",
    "available_loggers",
    "logger_from_name",
]


def __getattr__(name: str) -> Any:
    from fabric_core.loggers._entry_points import logger_class

    found = logger_class(name) if name[:1].isupper() else None
    if found is None:
        raise AttributeError(f"module 'fabric_core.loggers' has no attribute {name!r}")
    return found
