"""The plugin interfaces: the only contract a backend package sees.

Backends subclass these and register their implementations under the entry-point groups named in
``fabric_core.registry``. See each class's docstring for what it must guarantee.
"""

from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.api_version import PLUGIN_API_VERSION
from fabric_core.plugins.checkpoint_io import CheckpointIO
from fabric_core.plugins.environment import ClusterEnvironment
from fabric_core.plugins.launcher import Launcher
from fabric_core.plugins.logger import Logger
from fabric_core.plugins.precision import Precision
from fabric_core.plugins.strategy import Strategy

__all__ = [
    "PLUGIN_API_VERSION",
    "Accelerator",
    "CheckpointIO",
    "ClusterEnvironment",
    "Launcher",
    "Logger",
    "Precision",
    "Strategy",
]


def __getattr__(name: str) -> object:
    """Lightning's precision classes (``MixedPrecision``, ``DoublePrecision``, ``HalfPrecision``, a backend's
    ``DeepSpeedPrecision``) and ``TorchCheckpointIO`` at Lightning's paths, loaded lazily."""
    import importlib

    if name == "TorchCheckpointIO":
        return importlib.import_module("fabric_core.checkpoint.torch_io").TorchCheckpointIO
    if name.endswith("Precision"):
        return getattr(importlib.import_module("fabric_core.plugins.precision"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
