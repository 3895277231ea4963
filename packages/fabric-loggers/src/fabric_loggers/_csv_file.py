"""``metrics.csv``: one row per logged step, columns sorted by name (``step`` among them), added as metrics appear.

Rows wait in memory until a flush. A flush whose rows fit the header on disk appends them with a single
``write`` to a file opened for appending, so a killed process leaves whole rows only. A flush that brings
new metric names rewrites the file (old rows, wider header, new rows) into a temporary file that then
replaces the old one, so readers only ever see a complete file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from typing import IO

from fabric_loggers._atomic import replace_atomically

STEP_COLUMN = "step"


class MetricsCSV:
    """The metrics file of one run as this process writes it; the header on disk is re-read at each flush,
    so rows another process (a forked parent, an earlier run resumed with the same version) wrote are kept."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._pending: list[dict[str, int | float]] = []
        self._names: dict[str, None] = {}  # metric names of the pending rows, in order of appearance

    def add(self, metrics: Mapping[str, int | float], step: int) -> None:
        if STEP_COLUMN in metrics:
            raise ValueError(
                f"{STEP_COLUMN!r} is the CSV step column; log the metric under another name or use prefix=."
            )
        self._names.update(dict.fromkeys(metrics))
        self._pending.append({STEP_COLUMN: step, **metrics})

    @property
    def metrics(self) -> list[dict[str, int | float]]:
        """The rows logged since the last flush (each with its ``step``), as Lightning's writer keeps them."""
        return self._pending

    def flush(self) -> None:
        if not self._pending:
            return
        self._drop_partial_last_line()
        on_disk = self._read_header()
        if on_disk and STEP_COLUMN in on_disk and all(name in on_disk for name in self._names):
            columns = on_disk
        else:  # sorted by name, ``step`` included, as Lightning's CSV logger writes them
            columns = sorted({*on_disk, STEP_COLUMN, *self._names})
        if columns == on_disk:
            self._append(self._pending, columns)
        else:
            self._rewrite(self._pending, columns, has_rows=bool(on_disk))
        self._pending = []
        self._names = {}

    # ---------------------------------------------------------------- internals
    def _read_header(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", newline="") as handle:
                return next(csv.reader(handle), [])
        except FileNotFoundError:
            return []

    def _drop_partial_last_line(self) -> None:
        """A row cut short by an earlier crash would corrupt the row appended after it: cut it off."""
        try:
            with open(self.path, "rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return
                handle.seek(size - 1)
                if handle.read(1) == b"\n":
                    return
                position = size
                while position > 0:
                    step = min(4096, position)
                    handle.seek(position - step)
                    chunk = handle.read(step)
                    newline = chunk.rfind(b"\n")
                    if newline >= 0:
                        handle.truncate(position - step + newline + 1)
                        return
                    position -= step
                handle.truncate(0)
        except FileNotFoundError:
            return

    def _render(self, rows: Iterable[Mapping[str, int | float | str]], columns: list[str], header: bool) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def _append(self, rows: list[dict[str, int | float]], columns: list[str]) -> None:
        data = self._render(rows, columns, header=False).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:  # one write() in practice; a short write (full disk, signal) continues where it stopped
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)

    def _rewrite(self, rows: list[dict[str, int | float]], columns: list[str], has_rows: bool) -> None:
        def write(handle: IO[str]) -> None:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            if has_rows:
                with open(self.path, encoding="utf-8", newline="") as old:
                    reader = csv.reader(old)
                    header = next(reader, [])
                    for values in reader:
                        writer.writerow(dict(zip(header, values)))
            writer.writerows(rows)

        replace_atomically(self.path, write)
