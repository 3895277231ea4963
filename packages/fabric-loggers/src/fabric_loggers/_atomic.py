"""Replace a file in one step, so that a crash leaves either the old file or the new one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO


def replace_atomically(path: str, write: Callable[[IO[str]], None]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, sync it, then rename it over ``path``."""
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
