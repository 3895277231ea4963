"""Loggers that installed packages register under the ``fabric_core.loggers`` entry-point group.

Core never imports fabric-loggers (or any third-party logger package) by name: ``Fabric(loggers=["mlflow"])``
and ``from fabric_core.loggers import MLflowLogger`` both go through this group. An entry point's value is
a ``Logger`` class (or a factory) that can be called with no arguments to build a logger with defaults.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from fabric_core.errors import MisconfigurationError, PluginNotInstalledError
from fabric_core.plugins.logger import Logger

GROUP = "fabric_core.loggers"
#: The names and classes fabric-loggers provides, so that asking for one without it installed gives the pip command.
_FABRIC_LOGGERS_NAMES = ("csv", "tensorboard", "mlflow", "wandb", "comet", "dvclive", "clearml")
_FABRIC_LOGGERS_CLASSES = (
    "CSVLogger",
    "TensorBoardLogger",
    "MLflowLogger",
    "WandbLogger",
    "CometLogger",
    "DVCLiveLogger",
    "ClearMLLogger",
)
INSTALL_HINT = 'pip install "fabric-core[loggers]"'


def _entry_points() -> dict[str, metadata.EntryPoint]:
    from fabric_core.registry import entry_points_in  # the one cached pass over installed metadata

    found: dict[str, metadata.EntryPoint] = {}
    for entry_point in entry_points_in(GROUP):
        found.setdefault(entry_point.name, entry_point)
    return found


def _fabric_loggers_installed() -> bool:
    try:
        metadata.distribution("fabric-loggers")
    except metadata.PackageNotFoundError:
        return False
    return True


def available_loggers() -> list[str]:
    """The names ``Fabric(loggers=[...])`` accepts, from every installed package."""
    return sorted(_entry_points())


def logger_from_name(name: str) -> Logger:
    """Build the logger registered as ``name`` with its defaults, or fail naming the valid names."""
    entry_point = _entry_points().get(name)
    if entry_point is None:
        if name in _FABRIC_LOGGERS_NAMES and not _fabric_loggers_installed():
            raise PluginNotInstalledError(f"The {name!r} logger is provided by a separate package: {INSTALL_HINT}")
        valid = ", ".join(repr(known) for known in available_loggers()) or "none installed"
        raise MisconfigurationError(f"Unknown logger {name!r}; valid names: {valid} (or pass Logger instances).")
    built = entry_point.load()()
    if not isinstance(built, Logger):
        raise MisconfigurationError(f"The logger entry point {name!r} ({entry_point.value}) did not build a Logger.")
    return built


def logger_class(class_name: str) -> Any:
    """The class ``class_name`` exported by a package that registers loggers, or ``None`` if none does."""
    seen: set[str] = set()
    for entry_point in _entry_points().values():
        module_name, _, attribute = entry_point.value.partition(":")
        if attribute == class_name:
            return entry_point.load()
        package = module_name.split(".")[0]
        if package in seen:
            continue
        seen.add(package)
        try:
            found = getattr(importlib.import_module(package), class_name, None)
        except ImportError:
            continue  # a broken optional package must not hide the others
        if isinstance(found, type):
            return found
    if class_name in _FABRIC_LOGGERS_CLASSES and not _fabric_loggers_installed():
        raise PluginNotInstalledError(f"{class_name} is provided by a separate package: {INSTALL_HINT}")
    return None
