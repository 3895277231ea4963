"""Atomic writes to local paths and fsspec URLs: a crash never damages the previous file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_MARKER = ".fabric-tmp-"


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is a URL with a protocol other than ``file``."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | Path) -> Path:
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], None], storage_options: dict[str, Any] | None = None
) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it over ``path``.

    Locally the data is fsynced before ``os.replace`` and the folder after it, so that after a crash
    either the old or the new complete file is there. On object stores (fsspec) an upload only
    becomes visible once complete, which gives the same guarantee.
    """
    if is_remote(path):
        import fsspec

        fs, remote = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        parent = remote.rsplit("/", 1)[0] if "/" in remote else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/{TMP_MARKER}{uuid.uuid4().hex}" if parent else f"{TMP_MARKER}{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as f:
                write(f)
            fs.mv(tmp, remote)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
        return

    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_MARKER}{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    remove_stale_temporaries(target)


def remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of ``target`` left by writers that were killed mid-write.

    A temporary file's name carries its writer's pid; files of live writers are left alone.
    """
    prefix = f"{TMP_MARKER}{target.name}."
    for leftover in target.parent.glob(f"{prefix}*"):
        pid_text = leftover.name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
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
        import fsspec

        return fsspec.open(str(path), "rb", **(storage_options or {})).open()
    return open(local_path(path), "rb")


def remove(path: str | Path, storage_options: dict[str, Any] | None = None) -> None:
    """Delete a file or folder at ``path`` (local or fsspec URL)."""
    if is_remote(path):
        import fsspec

        fs, remote = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        fs.rm(remote, recursive=True)
        return
    target = local_path(path)
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
