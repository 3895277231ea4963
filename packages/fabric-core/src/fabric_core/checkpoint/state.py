"""Turning a user's state dict (modules, optimizers, plain values) into saveable data and back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.checkpoint.errors import CheckpointError

#: Where the precision plugin's state (a gradient scaler) is kept when the user did not save it.
PRECISION_KEY = "__fabric_precision__"

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy


def _unwrap_optimizer(obj: Any) -> Any:
    from fabric_core.wrappers.optimizer import _FabricOptimizer

    return obj.optimizer if isinstance(obj, _FabricOptimizer) else obj


def to_saveable(strategy: Strategy, obj: Any) -> Any:
    """The plain-data form of ``obj``: state dicts for modules, optimizers and stateful objects."""
    from fabric_core.wrappers.module import unwrap_module

    if isinstance(obj, Module):
        return strategy.get_module_state_dict(unwrap_module(obj))
    obj = _unwrap_optimizer(obj)
    if isinstance(obj, Optimizer):
        return strategy.get_optimizer_state(obj)
    if _is_stateful(obj):
        return obj.state_dict()
    return obj


def _is_stateful(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "state_dict", None))
        and callable(getattr(obj, "load_state_dict", None))
    )


def convert_state_for_saving(
    strategy: Strategy, state: dict[str, Any], filter: dict[str, Callable[[str, Any], bool]] | None = None
) -> dict[str, Any]:
    """Convert each entry of ``state``; ``filter[key](name, value)`` picks which items of that entry to keep."""
    if not isinstance(state, dict):
        raise TypeError(f"fabric.save expects a dict of state, got {type(state).__name__}.")
    filter = filter or {}
    unknown = set(filter) - set(state)
    if unknown:
        raise KeyError(f"filter names keys that are not in the state: {sorted(unknown)}; state keys: {sorted(state)}.")
    converted: dict[str, Any] = {}
    for key, obj in state.items():
        value = to_saveable(strategy, obj)
        if key in filter and isinstance(value, dict):
            # As in Lightning: a filter applies to dict entries (a non-dict value is kept as it is), and an
            # entry whose items are all filtered out is left out.
            keep = filter[key]
            value = {k: v for k, v in value.items() if keep(k, v)}
            if not value:
                continue
        converted[key] = value
    precision_state = strategy.precision.state_dict()
    if precision_state and not any(obj is strategy.precision for obj in state.values()):
        converted[PRECISION_KEY] = precision_state
    return converted


def restore_object(strategy: Strategy, target: Any, value: Any, strict: bool = True) -> bool:
    """Load ``value`` into ``target`` in place; returns ``False`` when ``target`` is a plain value."""
    from fabric_core.wrappers.module import unwrap_module

    if isinstance(target, Module):
        strategy.load_module_state_dict(unwrap_module(target), value, strict=strict)
        return True
    target = _unwrap_optimizer(target)
    if isinstance(target, Optimizer):
        strategy.load_optimizer_state(target, value)
        return True
    if _is_stateful(target):
        target.load_state_dict(value)
        return True
    return False


def restore_state(
    strategy: Strategy, checkpoint: dict[str, Any], state: dict[str, Any] | None, strict: bool, path: str | Path
) -> dict[str, Any]:
    """Load ``checkpoint`` into ``state`` in place; returns the checkpoint entries ``state`` did not ask for."""
    precision_state = checkpoint.pop(PRECISION_KEY, None)
    if precision_state is not None:
        strategy.precision.load_state_dict(precision_state)
    if state is None:
        return checkpoint
    if not isinstance(state, dict):
        raise TypeError(
            f"fabric.load expects a dict of state to restore into (or none), got {type(state).__name__}. "
            "To load a raw state dict into one module or optimizer use fabric.load_raw(path, obj)."
        )
    missing = [k for k in state if k not in checkpoint]
    if missing and strict:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has no entries {missing}; it holds {sorted(checkpoint)}. "
            "Pass strict=False to restore only what is there."
        )
    for key, target in state.items():
        if key not in checkpoint:
            continue
        if not restore_object(strategy, target, checkpoint[key], strict=strict):
            state[key] = checkpoint[key]
    return {k: v for k, v in checkpoint.items() if k not in state}
