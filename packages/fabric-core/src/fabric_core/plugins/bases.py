"""Base classes a backend may extend instead of starting from the bare interfaces.

Part of the versioned backend contract (``PLUGIN_API_VERSION``): a backend imports these from here,
never from the modules that implement them, so core can move its internals freely.
"""

from fabric_core.checkpoint.torch_io import TorchCheckpointIO
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import TrueDtypePrecision
from fabric_core.strategies.process_group import ProcessGroupStrategy, resolve_timeout

__all__ = ["MixedPrecision", "ProcessGroupStrategy", "TorchCheckpointIO", "TrueDtypePrecision", "resolve_timeout"]
