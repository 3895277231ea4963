"""``fabric.save``/``fabric.load`` for states that hold a DeepSpeed model: DeepSpeed checkpoint folders.

The folder is DeepSpeed's own layout (``latest``, ``<tag>/mp_rank_00_model_states.pt``, one
optimizer shard per rank, ``zero_to_fp32.py``), so DeepSpeed's tools read it. The user's other
entries travel as DeepSpeed's ``client_state``, next to a small record of which key held what.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.checkpointing import CheckpointError, convert_state_for_saving, is_remote, restore_state
from torch.optim import Optimizer

from fabric_deepspeed.checkpoint_folder import commit_staging, prepare_staging, recover_interrupted_swap, staging_path

if TYPE_CHECKING:
    from fabric_deepspeed.strategy import DeepSpeedStrategy

#: DeepSpeed names each checkpoint inside the folder by a tag; Fabric's folders hold exactly one.
TAG = "checkpoint"
#: client-state entry recording which keys of the user's state DeepSpeed stored itself.
META_KEY = "__fabric_deepspeed__"
META_VERSION = 1


def is_deepspeed_checkpoint(path: Path) -> bool:
    """A DeepSpeed checkpoint folder names its newest tag in a ``latest`` file."""
    return path.is_dir() and (path / "latest").is_file()


def _classify(strategy: DeepSpeedStrategy, state: dict[str, Any]) -> tuple[str, Any, list[str], list[str]]:
    """(model key, engine, keys of its optimizer, keys of its scheduler) in ``state``."""
    found = strategy._engines.engines_in_state(state)
    if len(found) != 1:
        keys = [k for k, _ in found]
        raise MisconfigurationError(
            f"A DeepSpeed checkpoint holds one DeepSpeed model, but the state has {len(found)} ({keys}). Save each model "
            "with its optimizer in its own checkpoint: fabric.save('a', {'model': model_a, 'optimizer': opt_a})."
        )
    model_key, engine = found[0]
    record = strategy._engines.record_of(engine)
    optimizer_keys = [
        k
        for k, v in state.items()
        if k != model_key and _is_optimizer(v) and strategy._engines.find_for_optimizer(v) is engine
    ]
    scheduler_keys = [k for k, v in state.items() if record.scheduler is not None and v is record.scheduler]
    return model_key, engine, optimizer_keys, scheduler_keys


def _is_optimizer(value: Any) -> bool:
    from fabric_core.plugins.wrapped import is_fabric_optimizer

    return isinstance(value, Optimizer) or is_fabric_optimizer(value)


def save_deepspeed_checkpoint(
    strategy: DeepSpeedStrategy,
    path: Path,
    state: dict[str, Any],
    storage_options: Any = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
) -> None:
    """Every rank writes its shard into a staging folder; rank 0 then swaps it in (a crash keeps the old one)."""
    if storage_options is not None:
        raise TypeError("DeepSpeed writes checkpoint folders itself; storage_options is not supported with it.")
    if is_remote(path):
        raise MisconfigurationError(
            f"DeepSpeed writes checkpoints to a local (or shared) folder, not to {str(path)!r}."
        )
    model_key, engine, optimizer_keys, scheduler_keys = _classify(strategy, state)
    engine_keys = {model_key, *optimizer_keys, *scheduler_keys}
    filtered = sorted(set(filter or {}) & engine_keys)
    if filtered:
        raise MisconfigurationError(
            f"filter names {filtered}, which DeepSpeed saves whole (model, optimizer, scheduler); filter other entries only."
        )
    client = convert_state_for_saving(strategy, {k: v for k, v in state.items() if k not in engine_keys}, filter)
    client[META_KEY] = {
        "version": META_VERSION,
        "model": model_key,
        "optimizers": optimizer_keys,
        "schedulers": scheduler_keys,
        "client_keys": sorted(k for k in client if k != META_KEY),
    }
    if strategy.is_global_zero:
        prepare_staging(path)
    strategy.barrier("deepspeed_save_prepare")
    engine.save_checkpoint(str(staging_path(path)), tag=TAG, client_state=client)
    strategy.barrier("deepspeed_save_written")
    if strategy.is_global_zero:
        commit_staging(path)
    strategy.barrier("deepspeed_save_committed")


def load_deepspeed_checkpoint(
    strategy: DeepSpeedStrategy, path: Path, state: Any, strict: bool = True, weights_only: bool = True
) -> dict[str, Any]:
    """Restore the model (and its optimizer and scheduler, when ``state`` names them) through the engine."""
    if not isinstance(state, dict) or not strategy._engines.engines_in_state(state):
        raise MisconfigurationError(
            f"{str(path)!r} is a DeepSpeed checkpoint folder: pass the state to restore into, with the model returned by "
            "fabric.setup, e.g. fabric.load(path, {'model': model, 'optimizer': optimizer}). To read it without DeepSpeed, "
            "convert it first with fabric_deepspeed.convert_zero_checkpoint_to_fp32_state_dict."
        )
    model_key, engine, optimizer_keys, scheduler_keys = _classify(strategy, state)
    from fabric_deepspeed.safe_loading import safe_checkpoint_engine

    with safe_checkpoint_engine(engine, weights_only=weights_only, path=path):
        load_path, client_state = engine.load_checkpoint(
            str(path),
            load_module_strict=strict,
            load_optimizer_states=bool(optimizer_keys),
            load_lr_scheduler_states=bool(scheduler_keys),
        )
    if load_path is None:
        raise CheckpointError(f"DeepSpeed could not load the checkpoint in {str(path)!r} (see its log above).")
    client_state = dict(client_state or {})
    meta = client_state.get(META_KEY)
    if not isinstance(meta, dict):
        # A folder written by DeepSpeed directly (not by fabric.save): its client state is all the user's.
        meta = {"model": model_key, "optimizers": [], "schedulers": [], "client_keys": sorted(client_state)}
    client = {k: client_state[k] for k in meta.get("client_keys", []) if k in client_state}
    rest = {k: v for k, v in state.items() if k not in {model_key, *optimizer_keys, *scheduler_keys}}
    remainder = restore_state(strategy, client, rest, strict=strict, path=path)
    state.update(rest)  # plain values restore_state put into ``rest`` belong in the caller's dict
    return remainder


def recover(strategy: DeepSpeedStrategy, path: Path) -> None:
    """(All ranks) bring back a checkpoint whose replacement a crash interrupted."""
    if strategy.is_global_zero and not path.exists():
        recover_interrupted_swap(path)
    strategy.barrier("deepspeed_recover")
