"""FSDP checkpoints: sharded folders through torch.distributed.checkpoint, or one full file."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.state import convert_state_for_saving, restore_state
from fabric_core.checkpoint.storage import check_location
from fabric_core.wrappers.module import unwrap_module
from fabric_core.wrappers.optimizer import _FabricOptimizer

if TYPE_CHECKING:
    from fabric_core.strategies.fsdp import FSDPStrategy

METADATA = ".metadata"
PLAIN_STATE = "fabric_state.pt"  # everything that is not a module or optimizer, written by rank 0
MANIFEST_KIND = "torch-distributed-checkpoint"


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


def save_sharded(
    strategy: FSDPStrategy,
    path: str | Path,
    state: dict[str, Any],
    filter: Any,
    storage_options: Any = None,
    async_: bool = False,
) -> Future[None] | None:
    """Write one shard per rank, the plain entries and, last, the checksum manifest (see ``checkpoint.folder``).

    Modules and optimizers go through ``torch.distributed.checkpoint`` (its fsspec writer for URLs);
    the other entries (plain values, schedulers) into ``fabric_state.pt`` beside them. Every file is
    hashed while it is written. ``path`` may be a local folder or an fsspec URL.

    With ``async_`` the state is copied (DCP's staging) and the call returns a future on every rank;
    DCP's ``async_save`` writes the shards in the background over a process group of its own, and
    the manifest is written when every rank's shards are, so the previous checkpoint stays the
    current one until then (also after a crash).
    """
    import torch.distributed.checkpoint as dcp

    from fabric_core.checkpoint import folder
    from fabric_core.checkpoint.dcp_io import hashing_writer

    check_location(path)
    # one save at a time: a pending background save still writes into the staging folder
    strategy.checkpoint_io.wait_for_saves()
    save_id = strategy.broadcast(folder.new_save_id() if strategy.is_global_zero else None)
    plan = folder.plan_folder_save(path, save_id, storage_options)
    sharded = {k: v for k, v in state.items() if _is_sharded_entry(v)}
    plain = {k: v for k, v in state.items() if k not in sharded}
    sharded_filter = {k: f for k, f in (filter or {}).items() if k in sharded}
    plain_filter = {k: f for k, f in (filter or {}).items() if k in plain}
    converted = convert_state_for_saving(strategy, _split(sharded, full=False), sharded_filter)
    plain_converted = convert_state_for_saving(strategy, plain, plain_filter)
    if strategy.is_global_zero:
        folder.prepare(plan)
    strategy.barrier("fsdp_save_prepare")
    writer, records = hashing_writer(plan)
    if not async_:
        dcp.save(converted, storage_writer=writer)
        _finish_save(strategy, plan, records, plain_converted, group=None)
        return None
    from fabric_core.checkpoint.async_save import snapshot, submit

    group = _checkpoint_group(strategy)
    plain_copy = snapshot(plain_converted) if strategy.is_global_zero else {}
    response = dcp.async_save(converted, storage_writer=writer, process_group=group)
    # an AsyncSaveResponse only when DCP stages asynchronously (a stager of its own; not this writer)
    written = response if isinstance(response, Future) else response.upload_completion
    return submit(strategy.checkpoint_io, lambda: _finish_save(strategy, plan, records, plain_copy, group, written))


def _checkpoint_group(strategy: FSDPStrategy) -> Any:
    """A gloo process group of all ranks for background saves, apart from the one training uses.

    Created on the first background save (every rank saves, so every rank creates it) and kept by
    the strategy: collectives of a background save must not interleave with the training loop's.
    """
    import torch.distributed as dist

    group = getattr(strategy, "_fabric_checkpoint_group", None)
    if group is None:
        group = dist.new_group(backend="gloo")
        strategy._fabric_checkpoint_group = group  # type: ignore[attr-defined]
    return group


def _finish_save(
    strategy: FSDPStrategy,
    plan: Any,
    records: dict[str, tuple[int, str]],
    plain: dict[str, Any],
    group: Any,
    written: Future | None = None,
) -> None:
    """(Every rank) once its shards are written: the plain entries (rank 0), then the manifest, last.

    Failures of any rank are gathered so that every rank raises the same error and no rank waits
    for one that gave up; the manifest is written only if every rank succeeded.
    """
    from fabric_core.checkpoint import folder
    from fabric_core.checkpoint.manifest import Manifest, gather

    error = None
    try:
        if written is not None:
            written.result()
        if strategy.is_global_zero:
            records[PLAIN_STATE] = _write_plain(strategy, plain, plan)
    except Exception as err:
        error = f"rank {strategy.global_rank}: {type(err).__name__}: {err}"
    everyone = gather((folder.record(records, strategy.global_rank), error), group)
    errors = [e for _, e in everyone if e]
    if errors and strategy.is_global_zero:
        folder.discard(plan)  # every rank is done with it
    _raise_if_failed(plan.location, errors)
    if strategy.is_global_zero:
        try:
            manifest = Manifest(kind=MANIFEST_KIND)
            for files, _ in everyone:
                manifest.files.update(files)
            folder.commit(plan, manifest)
        except Exception as err:
            error = f"rank 0 (writing the manifest): {type(err).__name__}: {err}"
    _raise_if_failed(plan.location, [e for e in gather(error, group) if e])


def _raise_if_failed(location: str, errors: list[str]) -> None:
    if errors:
        raise CheckpointError(
            f"The sharded checkpoint {location!r} was not saved (the previous one at that path is kept): "
            + "; ".join(errors)
        )


def _write_plain(strategy: FSDPStrategy, data: dict[str, Any], plan: Any) -> tuple[int, str]:
    from fabric_core.checkpoint.integrity import hash_file
    from fabric_core.checkpoint.storage import join

    target = join(plan.url, PLAIN_STATE)
    io = strategy.checkpoint_io
    write_file = getattr(io, "write_file", None)
    if callable(write_file):
        return write_file(data, target, storage_options=plan.storage_options)
    io.save_checkpoint(data, target, storage_options=plan.storage_options)
    return hash_file(plan.fs, join(plan.folder, PLAIN_STATE))


def is_sharded_checkpoint(path: str | Path, storage_options: Any = None) -> bool:
    """Whether ``path`` is a folder (sharded) checkpoint rather than one file."""
    from fabric_core.checkpoint.folder import is_folder

    return is_folder(path, storage_options)


def load_checkpoint(
    strategy: FSDPStrategy,
    path: str | Path,
    state: Any,
    strict: bool,
    weights_only: bool,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Load either kind of checkpoint (a sharded folder or one full file) from a path or URL."""
    if is_sharded_checkpoint(path, storage_options):
        return load_sharded(strategy, path, state, strict, verify=verify, storage_options=storage_options)
    return load_full(strategy, path, state, strict, weights_only, verify=verify, storage_options=storage_options)


def load_sharded(
    strategy: FSDPStrategy,
    path: str | Path,
    state: Any,
    strict: bool,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Load a sharded folder into ``state``, resharding to the current number of processes.

    Only a complete checkpoint (its manifest present) is read; with ``verify`` every file's checksum
    is checked first, the files split among the ranks.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    from fabric_core.checkpoint.dcp_io import reader
    from fabric_core.checkpoint.folder import open_folder
    from fabric_core.checkpoint.manifest import gather, raise_problems, rank_and_world, verify_files
    from fabric_core.checkpoint.storage import join
    from fabric_core.plugins.checkpoint_io import load_options

    strategy.checkpoint_io.wait_for_saves()  # a background save of this path must land first
    try:
        found = open_folder(path, storage_options, foreign_marker=METADATA)
    except CheckpointError as err:
        raise CheckpointError(f"{str(path)!r} is not a sharded checkpoint folder: {err}") from None
    if state is None:
        raise CheckpointError(
            f"{str(path)!r} is sharded: pass the state to restore into (fabric.load(path, {{'model': model, ...}})), "
            "or turn it into one file with `fabric consolidate`."
        )
    if verify and found.manifest is not None:
        rank, world = rank_and_world()
        problems = verify_files(found.fs, found.folder, found.manifest, rank, world)
        raise_problems(str(path), [p for share in gather(problems) for p in share])
    storage_reader = reader(found, storage_options)
    sharded_keys = {key.split(".", 1)[0] for key in storage_reader.read_metadata().state_dict_metadata}
    if found.manifest is not None:
        has_plain = PLAIN_STATE in found.manifest.files
    else:
        has_plain = (
            found.fs.exists(join(found.folder, PLAIN_STATE)) if found.fs else Path(found.folder, PLAIN_STATE).is_file()
        )
    plain = (
        strategy.checkpoint_io.load_checkpoint(
            join(found.url, PLAIN_STATE), **load_options(verify, storage_options if found.fs else None)
        )
        if has_plain
        else {}
    )
    stored = sharded_keys | set(plain)
    missing = [k for k in state if k not in stored]
    if missing and strict:
        raise CheckpointError(f"Checkpoint {str(path)!r} has no entries {missing}; it holds {sorted(stored)}.")
    wanted = {k: v for k, v in state.items() if k in sharded_keys and _is_sharded_entry(v)}
    if wanted:
        target = _split(wanted, full=False)
        dcp.load(target, storage_reader=reader(found, storage_options))
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


def load_full(
    strategy: FSDPStrategy,
    path: Any,
    state: Any,
    strict: bool,
    weights_only: bool,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Load one full file on every rank and let each keep its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    from fabric_core.plugins.checkpoint_io import load_options

    checkpoint = strategy.checkpoint_io.load_checkpoint(
        path, map_location="cpu", weights_only=weights_only, **load_options(verify, storage_options)
    )
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
