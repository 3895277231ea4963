"""The objects ``Fabric.setup*`` return: thin wrappers that route calls through the strategy."""

from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule, is_wrapped, unwrap_module
from fabric_core.wrappers.optimizer import _FabricOptimizer

__all__ = ["_FabricDataLoader", "_FabricModule", "_FabricOptimizer", "is_wrapped", "unwrap_module"]
