"""FSDP checkpoints: sharded folders through torch.distributed.checkpoint, or one full file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.state import convert_state_for_saving, restore_state
from fabric_core.wrappers.module import unwrap_module
from fabric_core.wrappers.optimizer import _FabricOptimizer

if TYPE_CHECKING:
    from fabric_core.strategies.fsdp import FSDPStrategy

METADATA = ".metadata"
PLAIN_STATE = "fabric_state.pt"  # everything that is not a module or optimizer, written by rank 0


def _modules(state: dict[str, Any]) -> list[Module]:
    return [unwrap_module(v) for v in state.values() if isinstance(v, Module)]


def _optimizer(obj: Any) -> Any:
    return obj.optimizer if isinstance(obj, _FabricOptimizer) else obj


def _options(full: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=full)


def _split(state: dict[str, Any], full: bool) -> dict[str, Any]:
    """Modules and optimizers as (sharded or full) state dicts; other entries converted as usual."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    modules = _modules(state)
    converted: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Module):
            converted[key] = get_model_state_dict(unwrap_module(value), options=_options(full))
        elif isinstance(_optimizer(value), Optimizer):
            opt = _optimizer(value)
            owner = next((m for m in modules if _owns(m, opt)), None)
            if owner is None:
                raise CheckpointError(
                    f"Optimizer {key!r} must be saved together with the module whose parameters it holds."
                )
            converted[key] = get_optimizer_state_dict(owner, opt, options=_options(full))
        else:
            converted[key] = value
    return converted


def _owns(module: Module, optimizer: Optimizer) -> bool:
    ids = {id(p) for p in module.parameters()}
    return all(id(p) in ids for g in optimizer.param_groups for p in g["params"])


def full_state(
    strategy: FSDPStrategy, state: dict[str, Any], filter: dict[str, Callable[[str, Any], bool]] | None
) -> dict[str, Any]:
    return convert_state_for_saving(strategy, _split(state, full=True), filter)


def _is_sharded_entry(value: Any) -> bool:
    return isinstance(value, Module) or isinstance(_optimizer(value), Optimizer)


def save_sharded(strategy: FSDPStrategy, path: Path, state: dict[str, Any], filter: Any) -> None:
    """Write one shard per rank plus metadata into a temporary folder, then swap it in atomically.

    Modules and optimizers go through ``torch.distributed.checkpoint``; the other entries (plain
    values, schedulers) into ``fabric_state.pt`` beside them.
    """
    import torch.distributed.checkpoint as dcp

    if path.is_file():
        raise CheckpointError(f"{str(path)!r} is a file; a sharded FSDP checkpoint is a folder. Choose another path.")
    sharded = {k: v for k, v in state.items() if _is_sharded_entry(v)}
    plain = {k: v for k, v in state.items() if k not in sharded}
    sharded_filter = {k: f for k, f in (filter or {}).items() if k in sharded}
    plain_filter = {k: f for k, f in (filter or {}).items() if k in plain}
    converted = convert_state_for_saving(strategy, _split(sharded, full=False), sharded_filter)
    plain_converted = convert_state_for_saving(strategy, plain, plain_filter)
    tmp = path.with_name(f".fabric-tmp-{path.name}")
    if strategy.is_global_zero and tmp.exists():
        shutil.rmtree(tmp)
    strategy.barrier("fsdp_save_prepare")
    dcp.save(converted, checkpoint_id=str(tmp))
    if strategy.is_global_zero:
        strategy.checkpoint_io.save_checkpoint(plain_converted, tmp / PLAIN_STATE)
    strategy.barrier("fsdp_save_written")
    if strategy.is_global_zero:
        old = path.with_name(f".fabric-old-{path.name}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    strategy.barrier("fsdp_save_done")


def load_sharded(strategy: FSDPStrategy, path: Path, state: Any, strict: bool) -> dict[str, Any]:
    """Load a sharded folder into ``state``, resharding to the current number of processes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    if not (path / METADATA).is_file():
        raise CheckpointError(f"{str(path)!r} is not a sharded checkpoint folder (no {METADATA} file).")
    if state is None:
        raise CheckpointError(
            f"{str(path)!r} is sharded: pass the state to restore into (fabric.load(path, {{'model': model, ...}})), "
            "or turn it into one file with `fabric consolidate`."
        )
    reader = dcp.FileSystemReader(str(path))
    sharded_keys = {key.split(".", 1)[0] for key in reader.read_metadata().state_dict_metadata}
    plain = strategy.checkpoint_io.load_checkpoint(path / PLAIN_STATE) if (path / PLAIN_STATE).is_file() else {}
    stored = sharded_keys | set(plain)
    missing = [k for k in state if k not in stored]
    if missing and strict:
        raise CheckpointError(f"Checkpoint {str(path)!r} has no entries {missing}; it holds {sorted(stored)}.")
    wanted = {k: v for k, v in state.items() if k in sharded_keys and _is_sharded_entry(v)}
    if wanted:
        target = _split(wanted, full=False)
        dcp.load(target, checkpoint_id=str(path))
        modules = _modules(wanted)
        for key, value in wanted.items():
            if isinstance(value, Module):
                set_model_state_dict(unwrap_module(value), target[key], options=_options(False))
            else:
                opt = _optimizer(value)
                owner = next(m for m in modules if _owns(m, opt))
                set_optimizer_state_dict(owner, opt, target[key], options=_options(False))
    rest = {k: v for k, v in state.items() if k in plain}
    remainder = restore_state(strategy, plain, rest, strict=strict, path=path)
    state.update(rest)
    return {k: v for k, v in remainder.items() if k not in state}


def load_full(strategy: FSDPStrategy, path: Any, state: Any, strict: bool, weights_only: bool) -> dict[str, Any]:
    """Load one full file on every rank and let each keep its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    checkpoint = strategy.checkpoint_io.load_checkpoint(path, map_location="cpu", weights_only=weights_only)
    if state is None:
        return checkpoint
    modules = {k: unwrap_module(v) for k, v in state.items() if isinstance(v, Module)}
    for key, module in modules.items():
        if key in checkpoint:
            set_model_state_dict(module, checkpoint[key], options=_options(True))
    for key, value in state.items():
        opt = _optimizer(value)
        if isinstance(opt, Optimizer) and key in checkpoint:
            owner = next(m for m in modules.values() if _owns(m, opt))
            set_optimizer_state_dict(owner, opt, checkpoint[key], options=_options(True))
    rest = {k: v for k, v in state.items() if k not in modules and not isinstance(_optimizer(v), Optimizer)}
    remainder = restore_state(strategy, checkpoint, rest, strict=False, path=path)
    state.update(rest)
    missing = [k for k in state if k not in checkpoint]
    if missing and strict:
        raise CheckpointError(f"Checkpoint {str(path)!r} has no entries {missing}; it holds {sorted(checkpoint)}.")
    return {k: v for k, v in remainder.items() if k not in state}
