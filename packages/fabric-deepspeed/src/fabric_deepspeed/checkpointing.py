"""``fabric.save``/``fabric.load`` for states that hold a DeepSpeed model: DeepSpeed checkpoint folders.

The folder is DeepSpeed's own layout (``latest``, ``<tag>/mp_rank_00_model_states.pt``, one
optimizer shard per rank, ``zero_to_fp32.py``), so DeepSpeed's tools read it. The user's other
entries travel as DeepSpeed's ``client_state``, next to a small record of which key held what.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.errors import MisconfigurationError
from fabric_core.plugins import checkpoint_folders as folders
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
#: the kind recorded in the checksum manifest of a DeepSpeed checkpoint folder
MANIFEST_KIND = "deepspeed"


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
    path: str | Path,
    state: dict[str, Any],
    storage_options: Any = None,
    filter: dict[str, Callable[[str, Any], bool]] | None = None,
) -> None:
    """Every rank writes its shard into a staging folder; the checksum manifest goes in last.

    Locally rank 0 then swaps the staging folder in (a crash keeps the old one). For an fsspec URL
    the staging folder is local (DeepSpeed writes to local paths): each machine's first process
    uploads what its ranks wrote into a fresh subfolder, and rank 0 publishes the manifest (see
    ``fabric_core.checkpoint.folder``).
    """
    folders.check_location(path)
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
    if is_remote(path):
        _save_remote(strategy, str(path), engine, client, storage_options)
        return
    if storage_options is not None:
        raise TypeError(f"storage_options are for fsspec URLs; {str(path)!r} is a local path.")
    path = Path(path)
    if strategy.is_global_zero:
        prepare_staging(path)
    strategy.barrier("deepspeed_save_prepare")
    engine.save_checkpoint(str(staging_path(path)), tag=TAG, client_state=client)
    strategy.barrier("deepspeed_save_written")
    if strategy.is_global_zero:
        write_local_manifest(staging_path(path))
        commit_staging(path)
    strategy.barrier("deepspeed_save_committed")


def _save_remote(
    strategy: DeepSpeedStrategy, url: str, engine: Any, client: dict[str, Any], storage_options: Any
) -> None:

    save_id = strategy.broadcast(folders.new_save_id() if strategy.is_global_zero else None)
    plan = folders.plan_folder_save(url, save_id, storage_options)
    staging = Path(tempfile.gettempdir()) / f"fabric-deepspeed-save-{save_id}"
    if strategy.local_rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
        folders.prepare(plan)
    strategy.barrier("deepspeed_save_prepare")
    try:
        engine.save_checkpoint(str(staging), tag=TAG, client_state=client)
        strategy.barrier("deepspeed_save_written")
        records = upload_folder(staging, plan.fs, plan.folder) if strategy.local_rank == 0 else {}
        everyone = folders.gather(folders.record(records, strategy.global_rank))
        if strategy.is_global_zero:
            manifest = folders.Manifest(kind=MANIFEST_KIND)
            for files in everyone:
                manifest.files.update(files)
            folders.commit(plan, manifest)
    finally:
        strategy.barrier("deepspeed_save_uploaded")
        if strategy.local_rank == 0:
            shutil.rmtree(staging, ignore_errors=True)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def write_local_manifest(root: Path) -> None:
    """(Rank 0, after every rank wrote) hash every file DeepSpeed wrote and write the manifest last."""

    manifest = folders.Manifest(kind=MANIFEST_KIND)
    records = {
        p.relative_to(root).as_posix(): folders.hash_file(None, str(p))
        for p in _files(root)
        if p.name != folders.MANIFEST
    }
    manifest.files.update(folders.record(records, 0))
    data = manifest.encode()
    folders.atomic_write(root / folders.MANIFEST, lambda f: f.write(data))


def upload_folder(root: Path, fs: Any, remote: str) -> dict[str, tuple[int, str]]:
    """Upload every file under ``root`` to ``remote`` on ``fs``; returns (size, checksum) per relative name."""

    records = {}
    for file in _files(root):
        name = file.relative_to(root).as_posix()
        records[name] = folders.hash_file(None, str(file))
        fs.put_file(str(file), f"{remote.rstrip('/')}/{name}")
    return records


def holds_deepspeed_checkpoint(strategy: DeepSpeedStrategy, path: str | Path, storage_options: Any = None) -> bool:
    """Whether ``path`` (a local folder or a URL) holds a DeepSpeed checkpoint folder."""

    folders.check_location(path)
    if not is_remote(path):
        recover(strategy, Path(path))
        return is_deepspeed_checkpoint(Path(path))
    if not folders.is_folder(path, storage_options):
        return False
    try:
        found = folders.open_folder(path, storage_options, foreign_marker="latest")
    except CheckpointError:
        return False
    return found.manifest is None or found.manifest.kind == MANIFEST_KIND


def load_deepspeed_checkpoint(
    strategy: DeepSpeedStrategy,
    path: str | Path,
    state: Any,
    strict: bool = True,
    weights_only: bool = True,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Restore from a local folder or a URL (downloaded into a local folder first); checksums verified first."""

    if not isinstance(state, dict) or not strategy._engines.engines_in_state(state):
        raise MisconfigurationError(
            f"{str(path)!r} is a DeepSpeed checkpoint folder: pass the state to restore into, with the model returned by "
            "fabric.setup, e.g. fabric.load(path, {'model': model, 'optimizer': optimizer}). To read it without DeepSpeed, "
            "convert it first with fabric_deepspeed.convert_zero_checkpoint_to_fp32_state_dict."
        )
    if not is_remote(path):
        found = folders.open_folder(path, foreign_marker="latest")
        if verify and found.manifest is not None:
            problems: list[str] = folders.verify_files(
                None, found.folder, found.manifest, strategy.global_rank, strategy.world_size
            )
            folders.raise_problems(str(path), [p for share in folders.gather(problems) for p in share])
        return _load_folder(strategy, Path(path), state, strict, weights_only)
    found = folders.open_folder(path, storage_options, foreign_marker="latest")
    load_id = strategy.broadcast(uuid.uuid4().hex if strategy.is_global_zero else None)
    local = Path(tempfile.gettempdir()) / f"fabric-deepspeed-load-{load_id}"
    try:
        problems = []
        if strategy.local_rank == 0:
            found.fs.get(found.folder.rstrip("/") + "/", str(local), recursive=True)  # type: ignore[union-attr]
            if verify and found.manifest is not None:
                problems = folders.verify_files(None, str(local), found.manifest)
        folders.raise_problems(str(path), [p for share in folders.gather(problems) for p in share])
        strategy.barrier("deepspeed_load_downloaded")
        return _load_folder(strategy, local, state, strict, weights_only, name=str(path))
    finally:
        strategy.barrier("deepspeed_load_done")
        if strategy.local_rank == 0:
            shutil.rmtree(local, ignore_errors=True)


def _load_folder(
    strategy: DeepSpeedStrategy, path: Path, state: Any, strict: bool, weights_only: bool, name: str | None = None
) -> dict[str, Any]:
    """Restore the model (and its optimizer and scheduler, when ``state`` names them) through the engine."""
    label = name or str(path)
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
        raise CheckpointError(f"DeepSpeed could not load the checkpoint in {label!r} (see its log above).")
    client_state = dict(client_state or {})
    meta = client_state.get(META_KEY)
    if not isinstance(meta, dict):
        # A folder written by DeepSpeed directly (not by fabric.save): its client state is all the user's.
        meta = {"model": model_key, "optimizers": [], "schedulers": [], "client_keys": sorted(client_state)}
    client = {k: client_state[k] for k in meta.get("client_keys", []) if k in client_state}
    rest = {k: v for k, v in state.items() if k not in {model_key, *optimizer_keys, *scheduler_keys}}
    remainder = restore_state(strategy, client, rest, strict=strict, path=label)
    state.update(rest)  # plain values restore_state put into ``rest`` belong in the caller's dict
    return remainder


def recover(strategy: DeepSpeedStrategy, path: Path) -> None:
    """(All ranks) bring back a checkpoint whose replacement a crash interrupted."""
    if strategy.is_global_zero and not path.exists():
        recover_interrupted_swap(path)
    strategy.barrier("deepspeed_recover")
