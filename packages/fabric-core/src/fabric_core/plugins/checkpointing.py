"""Checkpoint helpers for backends that write their own formats (DeepSpeed folders, XLA shards).

They give a backend the same conversion of user state (modules, optimizers, stateful objects,
plain values, filters), the same restore rules and the same durability primitives as core's own
formats, so that every format keeps the same promises. Part of the versioned backend contract.
"""

from fabric_core.checkpoint.atomic import fsync_dir
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.state import convert_state_for_saving, restore_object, restore_state
from fabric_core.checkpoint.storage import is_remote

__all__ = [
    "CheckpointError",
    "convert_state_for_saving",
    "fsync_dir",
    "is_remote",
    "restore_object",
    "restore_state",
]
