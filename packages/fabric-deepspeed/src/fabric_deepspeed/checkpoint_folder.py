"""Writing a DeepSpeed checkpoint folder so that a crash never damages the previous one.

Every rank writes its shard into a staging folder next to the target; once all ranks are done,
global rank 0 swaps it into place with renames. After a crash at any point the previous checkpoint
is either still at ``path`` or (during the two renames) at ``path``'s backup name, which
``recover_interrupted_swap`` moves back. Shared storage between nodes is assumed, as DeepSpeed does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fabric_core.plugins.checkpointing import fsync_dir

STAGING_SUFFIX = ".fabric-saving"
BACKUP_SUFFIX = ".fabric-previous"


def staging_path(path: Path) -> Path:
    return path.with_name(path.name + STAGING_SUFFIX)


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def recover_interrupted_swap(path: Path) -> None:
    """Undo a swap that a crash interrupted: the previous checkpoint comes back to ``path``."""
    backup = backup_path(path)
    if backup.exists() and not path.exists():
        os.replace(backup, path)


def prepare_staging(path: Path) -> Path:
    """(Rank 0) an empty staging folder for ``path``; leftovers of an earlier crash are removed."""
    recover_interrupted_swap(path)
    staging = staging_path(path)
    _remove(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    return staging


def commit_staging(path: Path) -> None:
    """(Rank 0) move the complete staging folder to ``path``, replacing what was there."""
    staging, backup = staging_path(path), backup_path(path)
    _remove(backup)
    if path.exists() or path.is_symlink():
        os.replace(path, backup)
    os.replace(staging, path)
    fsync_dir(path.parent)
    _remove(backup)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
