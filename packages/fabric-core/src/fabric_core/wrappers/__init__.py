"""The objects ``Fabric.setup*`` return: thin wrappers that route calls through the strategy."""

from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule, is_wrapped, unwrap_module
from fabric_core.wrappers.optimizer import _FabricOptimizer
from fabric_core.wrappers.unwrap import _unwrap_objects, unwrap_objects

__all__ = [
    "_FabricDataLoader",
    "_FabricModule",
    "_FabricOptimizer",
    "_unwrap_objects",
    "is_wrapped",
    "unwrap_module",
    "unwrap_objects",
]
