"""Accessors for the objects ``fabric.setup`` returns, for backends that must see through them.

A backend never touches the wrapper classes' private attributes: these functions are the stable way
to get from what the user holds to what the strategy made. Part of the versioned backend contract.
"""

from __future__ import annotations

from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.wrappers.module import _FabricModule, is_wrapped, unwrap_compiled, unwrap_module
from fabric_core.wrappers.optimizer import _FabricOptimizer

__all__ = [
    "inner_optimizer",
    "is_fabric_module",
    "is_fabric_optimizer",
    "is_wrapped",
    "strategy_module",
    "unwrap_compiled",
    "unwrap_module",
]


def is_fabric_module(obj: object) -> bool:
    """Whether ``obj`` is a module returned by ``fabric.setup`` (compiled or not)."""
    return isinstance(unwrap_compiled(obj) if isinstance(obj, Module) else obj, _FabricModule)


def is_fabric_optimizer(obj: object) -> bool:
    """Whether ``obj`` is an optimizer returned by ``fabric.setup``."""
    return isinstance(obj, _FabricOptimizer)


def strategy_module(obj: Module) -> Module:
    """The module the strategy made (DDP, FSDP, an engine) inside what ``fabric.setup`` returned.

    Anything else is returned with only ``torch.compile``'s wrapper removed.
    """
    obj = unwrap_compiled(obj)
    if isinstance(obj, _FabricModule):
        return unwrap_compiled(obj._forward_module)
    return obj


def inner_optimizer(obj: Optimizer) -> Optimizer:
    """The optimizer the strategy set up, inside what ``fabric.setup`` returned (or ``obj`` itself)."""
    if isinstance(obj, _FabricOptimizer):
        return obj.optimizer
    return obj
