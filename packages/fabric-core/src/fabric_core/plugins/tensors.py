"""Tensor and device helpers shared by core and the backends (collections, devices, dtypes, init).

Part of the versioned backend contract: backends import these from here.
"""

from fabric_core.utilities.apply_func import apply_to_tensors, convert_floating, move_to_device
from fabric_core.utilities.device_parser import parse_device_indices
from fabric_core.utilities.init import skip_parameter_init

__all__ = ["apply_to_tensors", "convert_floating", "move_to_device", "parse_device_indices", "skip_parameter_init"]
