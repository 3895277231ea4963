"""Lightning's (FSDP1-era) ``FSDPStrategy`` arguments, translated onto FSDP2's ``fully_shard``.

Sharding strategies become a mesh and ``reshard_after_forward``; ``CPUOffload`` becomes
``CPUOffloadPolicy``; ``MixedPrecision`` becomes ``MixedPrecisionPolicy``; wrap policies of
``torch.distributed.fsdp.wrap`` pick the submodules sharded as their own unit. Keyword arguments of
FSDP1's constructor that FSDP2 covers by design are accepted; those that have no FSDP2 meaning are
refused with the alternative.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import Module

from fabric_core.errors import MisconfigurationError

SHARDING_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2")

# FSDP1 constructor arguments FSDP2 makes unnecessary: accepted, and without effect.
_SUBSUMED = {
    "use_orig_params": "FSDP2 always keeps the original parameters",
    "limit_all_gathers": "FSDP2 limits in-flight all-gathers itself",
    "backward_prefetch": "FSDP2 prefetches the next all-gather in backward by default",
    "forward_prefetch": "FSDP2 overlaps forward all-gathers by default",
    "device_id": "the strategy places the module on this process's device",
}
# FSDP1 arguments with no FSDP2 meaning, and what to use instead.
_REFUSED = {
    "process_group": "pass device_mesh=(replicas, shards) or a DeviceMesh instead",
    "sharding_group_size": "pass device_mesh=(replicas, shards) instead",
    "ignored_states": "pass ignored_modules instead",
}
# Arguments that FSDP2 supports through another spelling (handled here).
_TRANSLATED = ("sync_module_states", "ignored_modules", "param_init_fn")


class _ClassPolicy:
    """Picks submodules by class; a plain object so the strategy pickles for spawned processes."""

    def __init__(self, classes: tuple[type[Module], ...]) -> None:
        self.classes = classes

    def __call__(self, module: Module) -> bool:
        return isinstance(module, self.classes)


class _FSDP1Policy:
    """Adapts an FSDP1 policy ``fn(module, recurse, nonwrapped_numel)`` (``size_based_auto_wrap_policy``)."""

    def __init__(self, fn: Callable[..., bool]) -> None:
        self.fn = fn

    def __call__(self, module: Module) -> bool:
        numel = sum(p.numel() for p in module.parameters())
        return bool(self.fn(module=module, recurse=False, nonwrapped_numel=numel))


class _LambdaPolicy:
    """Adapts ``CustomPolicy(lambda_fn)``: a truthy result (``True`` or a kwargs dict) selects the module."""

    def __init__(self, fn: Callable[[Module], Any]) -> None:
        self.fn = fn

    def __call__(self, module: Module) -> bool:
        return bool(self.fn(module))


def module_policy(policy: Any, argument: str) -> Callable[[Module], bool] | None:
    """Turn any policy form users pass into a predicate ``fn(module) -> bool``.

    Accepted: module classes (one, or a set/list), ``fn(module) -> bool``, FSDP1's
    ``fn(module, recurse, nonwrapped_numel)`` (e.g. ``functools.partial(size_based_auto_wrap_policy, ...)``),
    and ``ModuleWrapPolicy`` / ``CustomPolicy`` from ``torch.distributed.fsdp.wrap``.
    """
    if policy is None:
        return None
    classes = getattr(policy, "_module_classes", None)
    if classes is not None:  # ModuleWrapPolicy
        return _ClassPolicy(tuple(classes))
    lambda_fn = getattr(policy, "_lambda_fn", None)
    if lambda_fn is not None:  # CustomPolicy
        return _LambdaPolicy(lambda_fn)
    if isinstance(policy, type) and issubclass(policy, Module):
        return _ClassPolicy((policy,))
    if callable(policy) and not isinstance(policy, type):
        return _FSDP1Policy(policy) if _takes_fsdp1_arguments(policy) else policy
    if isinstance(policy, Iterable) and not isinstance(policy, (str, bytes)):
        found = tuple(policy)
        if found and all(isinstance(c, type) and issubclass(c, Module) for c in found):
            return _ClassPolicy(found)
    raise MisconfigurationError(
        f"{argument} takes module classes ({{Block}}), a function(module) -> bool, an FSDP1 policy "
        f"fn(module, recurse, nonwrapped_numel), or a ModuleWrapPolicy/CustomPolicy; got {policy!r}."
    )


def _takes_fsdp1_arguments(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "recurse" in parameters or "nonwrapped_numel" in parameters


def checkpointing_policy(activation_checkpointing: Any, activation_checkpointing_policy: Any) -> Any:
    """The one activation-checkpointing policy, from the current or the older (class list) argument."""
    if activation_checkpointing is not None and activation_checkpointing_policy is not None:
        raise MisconfigurationError(
            "You cannot set both `activation_checkpointing` and `activation_checkpointing_policy`. "
            "Use `activation_checkpointing_policy` (the older `activation_checkpointing` takes module classes only)."
        )
    if activation_checkpointing is not None:
        classes = (
            (activation_checkpointing,) if isinstance(activation_checkpointing, type) else activation_checkpointing
        )
        return module_policy(set(classes), "activation_checkpointing")
    return module_policy(activation_checkpointing_policy, "activation_checkpointing_policy")


def sharding_strategy(value: Any) -> Any:
    """``torch.distributed.fsdp.ShardingStrategy`` from its enum value or name (any case)."""
    from torch.distributed.fsdp import ShardingStrategy

    if isinstance(value, ShardingStrategy):
        return value
    if isinstance(value, str) and value.upper() in ShardingStrategy.__members__:
        return ShardingStrategy[value.upper()]
    raise MisconfigurationError(
        f"sharding_strategy={value!r} is not valid; choose one of {', '.join(SHARDING_STRATEGIES)} "
        "(a string or torch.distributed.fsdp.ShardingStrategy)."
    )


def cpu_offload(value: Any) -> Any:
    """``torch.distributed.fsdp.CPUOffload`` from a bool, ``CPUOffload``, ``CPUOffloadPolicy`` or ``None``."""
    from torch.distributed.fsdp import CPUOffload, CPUOffloadPolicy

    if value is None or isinstance(value, bool):
        return CPUOffload(offload_params=bool(value))
    if isinstance(value, CPUOffload):
        return value
    if isinstance(value, CPUOffloadPolicy):
        return CPUOffload(offload_params=True)
    raise MisconfigurationError(
        f"cpu_offload takes True/False, torch.distributed.fsdp.CPUOffload or CPUOffloadPolicy; got {value!r}."
    )


def mixed_precision_policy(value: Any) -> tuple[Any, torch.dtype | None]:
    """``(MixedPrecisionPolicy or None, buffer dtype or None)`` from FSDP1's ``MixedPrecision`` or the policy."""
    from torch.distributed.fsdp import MixedPrecision, MixedPrecisionPolicy

    if value is None or isinstance(value, MixedPrecisionPolicy):
        return value, None
    if isinstance(value, MixedPrecision):
        policy = MixedPrecisionPolicy(
            param_dtype=value.param_dtype,
            reduce_dtype=value.reduce_dtype,
            cast_forward_inputs=value.cast_forward_inputs or value.cast_root_forward_inputs,
        )
        return policy, value.buffer_dtype
    raise MisconfigurationError(
        "mixed_precision takes torch.distributed.fsdp.MixedPrecision (FSDP1) or MixedPrecisionPolicy (FSDP2); "
        f"got {value!r}."
    )


@dataclass
class FSDP1Extras:
    """FSDP1 keyword arguments that still act under FSDP2."""

    sync_module_states: bool = False
    ignored_modules: tuple[Module, ...] = ()
    param_init_fn: Callable[[Module], None] | None = None
    accepted: dict[str, Any] = field(default_factory=dict)


def fsdp1_keywords(kwargs: dict[str, Any]) -> FSDP1Extras:
    """Sort FSDP1 constructor keywords: translate, accept (FSDP2 does it anyway) or refuse with the alternative."""
    extras = FSDP1Extras()
    for name, value in kwargs.items():
        if name in _REFUSED:
            raise MisconfigurationError(
                f"FSDPStrategy({name}=...) has no meaning with FSDP2 (fully_shard): {_REFUSED[name]}."
            )
        if name in _SUBSUMED:
            extras.accepted[name] = value
        elif name == "sync_module_states":
            extras.sync_module_states = bool(value)
        elif name == "ignored_modules":
            extras.ignored_modules = tuple(value or ())
        elif name == "param_init_fn":
            extras.param_init_fn = value
        else:
            valid = sorted((*_SUBSUMED, *_TRANSLATED))
            raise MisconfigurationError(
                f"FSDPStrategy got an unexpected keyword argument {name!r}. Besides its own arguments it accepts these "
                f"FSDP keywords: {', '.join(valid)}."
            )
    return extras
