"""``xla_fsdp`` checkpoint folders: one shard file per replica, completed by core's checksum manifest.

The folder is written with core's folder machinery (``fabric_core.plugins.checkpoint_folders``), so it
keeps the promises of every other format: locally the shards go into a staging folder that replaces
the previous checkpoint only once complete; on an fsspec URL they go into a fresh subfolder that the
manifest, uploaded last, names. Loading reads only complete folders and checks every file's size and
XXH3-128 checksum first (unless ``verify=False``). Folders written before manifests existed load too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.plugins import checkpoint_folders as folders
from fabric_core.plugins.checkpoint_io import load_options
from fabric_core.plugins.checkpointing import CheckpointError

if TYPE_CHECKING:
    from fabric_core.plugins import CheckpointIO, Strategy

#: Reserved key of each shard file: which rank wrote it, out of how many, and the FSDP shard metadata.
SHARD_INFO_KEY = "__xla_fsdp_shard__"
#: the kind recorded in the manifest of an xla_fsdp folder
MANIFEST_KIND = "xla-fsdp-shards"
SHARD_PREFIX = "rank-"
RANK_ZERO = "rank-00000-of-"


def shard_file_name(rank: int, world_size: int) -> str:
    return f"{SHARD_PREFIX}{rank:05d}-of-{world_size:05d}.pt"


def gather_objects(strategy: Strategy, obj: Any) -> list[Any]:
    """``obj`` of every replica, in rank order (XLA replicas share no torch.distributed group)."""
    if strategy.world_size == 1:
        return [obj]
    return [strategy.broadcast(obj, src=rank) for rank in range(strategy.world_size)]


def save_shards(strategy: Strategy, path: str | Path, shard: dict[str, Any], storage_options: Any = None) -> None:
    """Every replica writes ``shard`` (already on the host) into the folder ``path``; rank 0 commits it."""
    folders.check_location(path)
    save_id = strategy.broadcast(folders.new_save_id() if strategy.is_global_zero else None)
    plan = folders.plan_folder_save(path, save_id, storage_options)
    if strategy.is_global_zero:
        folders.prepare(plan)
    strategy.barrier("xla_fsdp_save_prepare")
    name = shard_file_name(strategy.global_rank, strategy.world_size)
    written = _write(strategy.checkpoint_io, shard, plan, name)
    everyone = gather_objects(strategy, folders.record({name: written}, strategy.global_rank))
    if strategy.is_global_zero:
        manifest = folders.Manifest(kind=MANIFEST_KIND)
        for files in everyone:
            manifest.files.update(files)
        folders.commit(plan, manifest)
    strategy.barrier("xla_fsdp_save_done")


def _write(io: CheckpointIO, shard: dict[str, Any], plan: folders.FolderSave, name: str) -> tuple[int, str]:
    """Write one shard file; its (size, checksum) for the manifest (hashed while written by core's IO)."""
    target = f"{plan.url.rstrip('/')}/{name}"
    write_file = getattr(io, "write_file", None)
    if callable(write_file):
        written: tuple[int, str] = write_file(shard, target, storage_options=plan.storage_options)
        return written
    io.save_checkpoint(checkpoint=shard, path=target, storage_options=plan.storage_options)
    return folders.hash_file(plan.fs, f"{plan.folder.rstrip('/')}/{name}")


def load_shard(
    strategy: Strategy,
    path: str | Path,
    weights_only: bool = True,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """This replica's shard of the folder ``path``, written with the same number of replicas."""
    rank, world_size = strategy.global_rank, strategy.world_size
    name = shard_file_name(rank, world_size)
    try:
        found = folders.open_folder(path, storage_options, foreign_marker=name)
    except CheckpointError:
        shards = [n for n in _listing(path, storage_options) if n.startswith(SHARD_PREFIX)]
        if shards:  # written by another number of replicas, before manifests existed
            raise CheckpointError(_no_shard(path, rank, world_size, shards)) from None
        raise
    if found.manifest is not None:
        if name not in found.manifest.files:
            raise CheckpointError(_no_shard(path, rank, world_size, sorted(found.manifest.files)))
        if verify:
            problems = folders.verify_files(found.fs, found.folder, found.manifest, rank, world_size)
            folders.raise_problems(str(path), [p for share in gather_objects(strategy, problems) for p in share])
    remote_options = storage_options if found.fs is not None else None
    shard = strategy.checkpoint_io.load_checkpoint(
        f"{found.url.rstrip('/')}/{name}",
        map_location="cpu",
        weights_only=weights_only,
        **load_options(verify, remote_options),
    )
    shard.pop(SHARD_INFO_KEY, None)
    return shard


def shard_urls(folder: str | Path, storage_options: Any = None, verify: bool = True) -> list[str]:
    """The shard files of a complete folder in rank order (all checked against the manifest with ``verify``)."""
    try:
        found = folders.open_folder(folder, storage_options)
        names = sorted(found.manifest.files) if found.manifest is not None else []
    except CheckpointError:  # written before manifests existed: rank 0's file names the number of replicas
        firsts = [n for n in _listing(folder, storage_options) if n.startswith(RANK_ZERO) and n.endswith(".pt")]
        if len(firsts) != 1:
            raise CheckpointError(
                f"{str(folder)!r} is not a complete xla_fsdp checkpoint folder (no manifest, and not exactly one "
                f"shard of rank 0: {firsts})."
            ) from None
        found = folders.open_folder(folder, storage_options, foreign_marker=firsts[0])
        world_size = int(firsts[0][len(RANK_ZERO) : -len(".pt")])
        names = [shard_file_name(rank, world_size) for rank in range(world_size)]
    if found.manifest is not None and verify:
        folders.raise_problems(str(folder), folders.verify_files(found.fs, found.folder, found.manifest))
    return [f"{found.url.rstrip('/')}/{name}" for name in names]


def _listing(path: str | Path, storage_options: Any) -> list[str]:
    fs, root = folders.filesystem(path, storage_options)
    if not fs.isdir(root):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))


def _no_shard(path: str | Path, rank: int, world_size: int, found: list[str]) -> str:
    return (
        f"Sharded checkpoint {str(path)!r} has no shard for rank {rank} of {world_size} replicas (it holds {found}). "
        "Load it with the number of replicas that wrote it, or merge it with fabric_xla.consolidate_checkpoint."
    )
