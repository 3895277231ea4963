"""Run folders on fsspec URLs (``s3://bucket/logs``, ``memory://logs``): the few file operations the file
loggers need, through fsspec (imported only for a URL).

Object stores have no append and no rename: ``metrics.csv`` on a URL is written whole at each flush (one
PUT, so readers see the old or the new file), and a version is taken as the next free one without a lock.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether ``path`` is an fsspec URL (``scheme://...``) rather than a local path."""
    return bool(_URL.match(path))


def filesystem(url: str) -> Any:
    """The fsspec filesystem that serves ``url``."""
    import fsspec

    return fsspec.core.url_to_fs(url)[0]


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def list_folders(url: str) -> list[str]:
    """Names of the folders directly under ``url`` (none when it does not exist)."""
    fs = filesystem(url)
    try:
        entries = fs.ls(url, detail=True)
    except FileNotFoundError:
        return []
    return [entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry["type"] == "directory"]


def makedirs(url: str) -> None:
    filesystem(url).makedirs(url, exist_ok=True)


def write_text(url: str, text: str) -> None:
    with filesystem(url).open(url, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


class RemoteMetricsCSV:
    """``metrics.csv`` on a URL: the same rows and columns as the local file, written whole at each flush."""

    def __init__(self, url: str) -> None:
        self.path = url
        self._pending: list[dict[str, int | float]] = []

    @property
    def metrics(self) -> list[dict[str, int | float]]:
        return self._pending

    def add(self, metrics: Mapping[str, int | float], step: int) -> None:
        from fabric_loggers._csv_file import STEP_COLUMN

        if STEP_COLUMN in metrics:
            raise ValueError(
                f"{STEP_COLUMN!r} is the CSV step column; log the metric under another name or use prefix=."
            )
        self._pending.append({STEP_COLUMN: step, **metrics})

    def flush(self) -> None:
        from fabric_loggers._csv_file import STEP_COLUMN

        if not self._pending:
            return
        fs = filesystem(self.path)
        header: list[str] = []
        rows: list[dict[str, str]] = []
        if fs.exists(self.path):
            with fs.open(self.path, "r", encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                rows = list(reader)
                header = list(reader.fieldnames or [])
        names = {name for row in self._pending for name in row}
        columns = header if header and names <= set(header) else sorted({*header, STEP_COLUMN, *names})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        writer.writerows(self._pending)
        write_text(self.path, buffer.getvalue())
        self._pending = []
