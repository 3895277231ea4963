"""``get_filesystem`` at Lightning's path (``lightning.fabric.utilities.cloud_io``): the fsspec filesystem of a path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


def get_filesystem(path: str | Path, **kwargs: Any) -> AbstractFileSystem:
    """The fsspec filesystem that serves ``path`` (local files, ``s3://``, ``gs://``...); ``kwargs`` go to it."""
    from fsspec.core import url_to_fs

    fs, _ = url_to_fs(str(path), **kwargs)
    return fs
