"""``unwrap_objects``: take Fabric's wrappers off everything in a collection (Lightning's ``_unwrap_objects``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.nn import Module

from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule, unwrap_compiled
from fabric_core.wrappers.optimizer import _FabricOptimizer


def _unwrap_one(obj: Any) -> Any:
    if isinstance(obj, Module):
        inner = unwrap_compiled(obj)
        if isinstance(inner, _FabricModule):
            # as Lightning does: the module the strategy runs (DistributedDataParallel(model), an
            # FSDP-sharded model ...), so that it can be handed to code that expects that module
            return unwrap_compiled(inner._forward_module)
        return inner
    if isinstance(obj, _FabricOptimizer):
        return obj.optimizer
    if isinstance(obj, _FabricDataLoader):
        return obj.dataloader
    return obj


def unwrap_objects(collection: Any) -> Any:
    """``collection`` with each module, optimizer and dataloader returned by ``fabric.setup*`` unwrapped.

    Works on one object or on nested dicts, lists and tuples of them. A module comes back as the
    strategy runs it (``DistributedDataParallel(model)`` under DDP, the model itself on one device);
    use ``unwrap_module`` for the user's own module. ``torch.compile`` wrappers are removed too.
    """
    if isinstance(collection, (Module, _FabricOptimizer, _FabricDataLoader)):
        return _unwrap_one(collection)
    if isinstance(collection, Mapping):
        return type(collection)({k: unwrap_objects(v) for k, v in collection.items()})  # type: ignore[call-arg]
    if isinstance(collection, tuple) and hasattr(collection, "_fields"):  # namedtuple
        return type(collection)(*(unwrap_objects(v) for v in collection))
    if isinstance(collection, (list, tuple)):
        return type(collection)(unwrap_objects(v) for v in collection)
    return collection


_unwrap_objects = unwrap_objects  # Lightning's private name, which example scripts import
