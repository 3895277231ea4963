"""Atomic writes to local paths and fsspec URLs: a crash never damages the previous file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from fabric_core.checkpoint.storage import filesystem, is_remote, local_path, remote_writer
from fabric_core.checkpoint.write_behind import release_cached_pages, write_behind

__all__ = [
    "TMP_MARKER",
    "atomic_write",
    "atomic_write_local",
    "fsync_dir",
    "is_remote",
    "local_path",
    "open_for_reading",
    "remove",
]

TMP_MARKER = ".fabric-tmp-"
T = TypeVar("T")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], T], storage_options: dict[str, Any] | None = None) -> T:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it over ``path``.

    Locally the data is fsynced before ``os.replace`` and the folder after it, so that after a crash
    either the old or the new complete file is there (see :func:`atomic_write_local`). On object
    stores (fsspec) an upload only becomes visible once complete (an aborted one is discarded),
    which gives the same guarantee. Returns what ``write`` returns.
    """
    if is_remote(path):
        fs, remote = filesystem(path, storage_options)
        with remote_writer(fs, remote) as f:
            return write(f)

    def through_file(tmp: Path, fd: int) -> T:
        with open(fd, "wb", closefd=False) as f:
            result = write(f)
            f.flush()
        return result

    return atomic_write_local(path, through_file)


def atomic_write_local(path: str | Path, write: Callable[[Path, int], T]) -> T:
    """Call ``write(tmp_path, fd)`` to fill a new temporary file, then move it over the local ``path``.

    The temporary file has ``path``'s own name, inside a fresh hidden folder next to it, so that a
    writer which records the file name (``torch.save`` names its zip archive after it) writes the
    same bytes as for ``path``. ``fd`` is open read-write on the file, so that ``write`` may hand the
    path to a writer of its own (``torch.save`` writes fastest to a path) and still read or patch
    the result. The data is flushed while it is written (``write_behind``, so the fsync itself is
    short), fsynced before ``os.replace``, and the folder fsynced after it.
    """
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"{TMP_MARKER}{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp = staging / target.name
    release_cached_pages(target)  # as the truncation of a plain torch.save would, without losing the file
    try:
        staging.mkdir()
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with write_behind(fd):
                result = write(tmp, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        _remove_temporary(staging)
        raise
    _remove_temporary(staging)
    fsync_dir(target.parent)
    remove_stale_temporaries(target)
    return result


def remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files (and their folders) of ``target`` left by writers that were killed mid-write.

    A temporary's name carries its writer's pid; those of live writers are left alone.
    """
    prefix = f"{TMP_MARKER}{target.name}."
    for leftover in target.parent.glob(f"{prefix}*"):
        pid_text = leftover.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        _remove_temporary(leftover)


def _remove_temporary(leftover: Path) -> None:
    if leftover.is_dir():
        import shutil

        shutil.rmtree(leftover, ignore_errors=True)
    else:
        leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort where the file system refuses)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_for_reading(path: str | Path, storage_options: dict[str, Any] | None = None) -> IO[bytes]:
    """Open ``path`` (local or fsspec URL) for binary reading."""
    if is_remote(path):
        fs, remote = filesystem(path, storage_options)
        return fs.open(remote, "rb")
    return open(local_path(path), "rb")


def remove(path: str | Path, storage_options: dict[str, Any] | None = None) -> None:
    """Delete a file or folder at ``path`` (local or fsspec URL)."""
    if is_remote(path):
        fs, remote = filesystem(path, storage_options)
        fs.rm(remote, recursive=True)
        return
    target = local_path(path)
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
