"""Folder checkpoints (sharded FSDP, DeepSpeed) that are atomic on local disks and object stores alike.

Local folder ``ck``: every file goes into the staging folder ``.fabric-tmp-ck`` next to it, the
manifest last, then renames swap it in (``.fabric-old-ck`` holds the previous one for a moment; a
loader that finds only that brings it back).

URL ``s3://b/ck`` (object stores cannot rename folders): every save writes into a fresh
subfolder ``ck/v-<save id>/``; the manifest ``ck/fabric-manifest.json`` — one object, uploaded
last, so it appears whole or not at all — names the subfolder and the checksum of each file. A
save killed midway leaves an unnamed subfolder that no loader reads; the next successful save
deletes it, and the previous complete subfolder, once its own manifest is in place.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.checkpoint.atomic import atomic_write, fsync_dir
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.manifest import MANIFEST, FileRecord, Manifest
from fabric_core.checkpoint.storage import check_location, filesystem, is_remote, join, local_path

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

VERSION_PREFIX = "v-"
STAGING_PREFIX = ".fabric-tmp-"
PREVIOUS_PREFIX = ".fabric-old-"


def new_save_id() -> str:
    """Sortable and unique: ``<unix time in ms>-<random>``."""
    return f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"


@dataclass
class FolderSave:
    """Where one folder save writes: ``url`` for writers that take URLs, ``fs``/``folder`` for fsspec calls."""

    location: str
    storage_options: dict[str, Any] | None
    fs: AbstractFileSystem | None  # None: local
    base: str  # the checkpoint's own path (local path or path inside fs)
    folder: str  # where the files go (fs path or local path)
    url: str  # the same as a URL or local path
    root: str  # subfolder name recorded in the manifest ('' locally)

    @property
    def remote(self) -> bool:
        return self.fs is not None


def plan_folder_save(path: str | Path, save_id: str, storage_options: dict[str, Any] | None = None) -> FolderSave:
    """Where a folder save of ``path`` writes (identical on every rank given the same ``save_id``)."""
    check_location(path)
    location = str(path)
    if is_remote(location):
        fs, base = filesystem(location, storage_options)
        root = VERSION_PREFIX + save_id
        return FolderSave(location, storage_options, fs, base, join(base, root), join(location, root), root)
    target = local_path(location)
    if target.is_file():
        raise CheckpointError(f"{location!r} is a file; a folder checkpoint is a folder. Choose another path.")
    staging = target.with_name(STAGING_PREFIX + target.name)
    return FolderSave(location, None, None, str(target), str(staging), str(staging), "")


def prepare(save: FolderSave) -> None:
    """(One rank) an empty folder to write into."""
    if save.fs is None:
        staging = Path(save.folder)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        recover_previous(Path(save.base))
    else:
        save.fs.makedirs(save.folder, exist_ok=True)


def commit(save: FolderSave, manifest: Manifest) -> None:
    """(One rank, after every rank wrote its files) write the manifest last and make the checkpoint current."""
    manifest.root = save.root
    data = manifest.encode()
    if save.fs is not None:
        atomic_write(join(save.location, MANIFEST), lambda f: f.write(data), save.storage_options)
        remove_leftovers(save.fs, save.base, keep=save.root)
        return
    atomic_write(Path(save.folder) / MANIFEST, lambda f: f.write(data))
    target, staging = Path(save.base), Path(save.folder)
    previous = target.with_name(PREVIOUS_PREFIX + target.name)
    if previous.exists():
        shutil.rmtree(previous)
    if target.exists():
        os.replace(target, previous)
    os.replace(staging, target)
    fsync_dir(target.parent)
    if previous.exists():
        shutil.rmtree(previous)


def discard(save: FolderSave) -> None:
    """(One rank) remove the files of a save that failed (best effort; the next save removes them too)."""
    try:
        if save.fs is None:
            shutil.rmtree(save.folder, ignore_errors=True)
        else:
            save.fs.rm(save.folder, recursive=True)
    except Exception:  # the save's own error is the one to report
        pass


def remove_leftovers(fs: AbstractFileSystem, base: str, keep: str) -> None:
    """Delete subfolders of interrupted or superseded saves (everything ``v-*`` but ``keep``)."""
    fs.invalidate_cache(base)
    for entry in fs.ls(base, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(VERSION_PREFIX) and name != keep:
            fs.rm(entry, recursive=True)


def recover_previous(target: Path) -> None:
    """Bring back a local checkpoint whose swap a crash interrupted (only the previous copy exists)."""
    previous = target.with_name(PREVIOUS_PREFIX + target.name)
    if previous.exists() and not target.exists():
        try:
            os.replace(previous, target)
        except FileNotFoundError:  # another rank brought it back first
            pass


@dataclass
class FolderLoad:
    """A complete folder checkpoint found at ``location``; ``manifest`` is ``None`` for foreign folders."""

    location: str
    fs: AbstractFileSystem | None
    folder: str
    url: str
    manifest: Manifest | None


def is_folder(path: str | Path, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` holds a folder checkpoint (rather than one file)."""
    check_location(path)
    if is_remote(path):
        fs, base = filesystem(path, storage_options)
        fs.invalidate_cache(base)
        return fs.isdir(base)
    target = local_path(path)
    recover_previous(target)
    return target.is_dir()


def open_folder(
    path: str | Path, storage_options: dict[str, Any] | None = None, foreign_marker: str | None = None
) -> FolderLoad:
    """Find the complete checkpoint at ``path`` through its manifest.

    A folder without manifest is accepted only if it holds ``foreign_marker`` (the file its own tool
    writes last, e.g. DCP's ``.metadata``): it was written by that tool directly, and loads unverified.
    """
    check_location(path)
    location = str(path)
    fs: AbstractFileSystem | None = None
    if is_remote(location):
        fs, base = filesystem(location, storage_options)
        fs.invalidate_cache(base)  # another process may have saved since this one last listed it
    else:
        base = str(local_path(location))
        recover_previous(Path(base))

    def exists(p: str) -> bool:
        return fs.exists(p) if fs is not None else os.path.exists(p)

    manifest_path = join(base, MANIFEST)
    if exists(manifest_path):
        if fs is not None:
            with fs.open(manifest_path, "rb") as handle:
                data = handle.read()
        else:
            data = Path(manifest_path).read_bytes()
        manifest = Manifest.decode(data, join(location, MANIFEST))
        folder = join(base, manifest.root) if manifest.root else base
        url = join(location, manifest.root) if manifest.root else location
        return FolderLoad(location, fs, folder, url, manifest)
    if foreign_marker is not None and exists(join(base, foreign_marker)):
        return FolderLoad(location, fs, base, location, None)
    raise CheckpointError(
        f"{location!r} holds no complete checkpoint: its manifest {MANIFEST!r} is missing (a save that was "
        "interrupted before it finished, or not a checkpoint folder)."
    )


def record(files: dict[str, tuple[int, str]], rank: int) -> dict[str, FileRecord]:
    return {name: FileRecord(size, digest, rank) for name, (size, digest) in files.items()}
