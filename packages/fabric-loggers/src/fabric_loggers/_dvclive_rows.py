"""DVCLive metric histories appended with one write per value, in DVCLive's own files and format.

``Live.log_metric`` does a lot per value: it builds the history's path twice (two ``mkdir`` calls
that fail with "exists"), checks that the file exists, opens it, makes a ``csv`` writer, writes one
row, closes the file and copies the whole summary dict (about 70 us per value on the project's CPU
machine). :class:`MetricRows` keeps that for the first value of each metric in a run (DVCLive then
creates the file with its header and registers the metric, which ``dvc.yaml``, the report and
Studio updates read) and appends every later row itself: one ``os.write`` to the history kept open
with ``O_APPEND``, so the row is in the operating system's hands when the call returns and a killed
process keeps it, as with DVCLive. The rows are byte-identical to DVCLive's (``step<TAB>value``,
DVCLive's line ending, NaN and infinities spelled as DVCLive writes them), and the summary is
updated in place under the same nested keys.
"""

from __future__ import annotations

import math
import os
from typing import Any

#: histories kept open per run; further metrics are written through ``Live.log_metric`` itself
OPEN_LIMIT = 128
_LINE_END = os.linesep.encode()


class MetricRows:
    """The open metric histories of one ``dvclive.Live`` run (see the module docstring)."""

    def __init__(self, live: Any, open_limit: int = OPEN_LIMIT) -> None:
        self._live = live
        self._open_limit = open_limit
        self._files: dict[str, tuple[int, list[str]]] = {}  # name -> (descriptor, summary keys)
        self._metrics_dir = os.path.join(live.plots_dir, "metrics")

    def log(self, name: str, value: int | float, step: int) -> None:
        """Append ``value`` at ``step`` to the history of ``name`` (``live.step`` is already ``step``)."""
        known = self._files.get(name)
        if known is None:
            self._live.log_metric(name, value)  # DVCLive's own path: folder, file with header, registration
            self._open(name)
            return
        fd, keys = known
        stored: int | float | str = value
        if type(value) is float and not math.isfinite(value):
            stored = str(value)  # as DVCLive stores NaN and infinities: "nan", "inf", "-inf"
        os.write(fd, b"%d\t%s%s" % (step, str(stored).encode(), _LINE_END))
        summary = self._live.summary
        for key in keys[:-1]:
            inner = summary.get(key)
            if not isinstance(inner, dict):
                inner = summary[key] = {}
            summary = inner
        summary[keys[-1]] = stored

    def _open(self, name: str) -> None:
        """Keep the history DVCLive just wrote open for appending (up to the limit of open files)."""
        if len(self._files) >= self._open_limit:
            return
        path = os.path.join(self._metrics_dir, f"{name}.tsv")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return  # a name DVCLive stores elsewhere (or not at all): every value goes through DVCLive
        self._files[name] = (fd, os.path.normpath(name).split(os.path.sep))

    def close(self) -> None:
        """Close the histories (their rows are already written)."""
        files, self._files = self._files, {}
        for fd, _ in files.values():
            try:
                os.close(fd)
            except OSError:
                pass
