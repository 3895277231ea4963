"""Progress over a loop: a tqdm bar in a terminal, one line per step of N percent in logs.

Redrawing a bar in a log file (a SLURM ``.out``, CI output) fills it with carriage returns; a job
log wants a few plain lines instead. So the bar is drawn only when the stream is a terminal (or a
notebook) and ``tqdm`` is installed; otherwise ``LineProgress`` prints a line each time another
``every`` percent is done. tqdm is an optional dependency (``pip install tqdm``): it is small, has
no dependencies of its own, and most PyTorch environments have it already. rich is not used: one
backend keeps the output predictable, and rich's live display needs a terminal anyway.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, Literal, TypeVar

T = TypeVar("T")

Mode = Literal["auto", "bar", "lines"]
_MODES = ("auto", "bar", "lines")


class LineProgress(Iterable[T]):
    """Iterates ``iterable`` and prints ``desc: 30% 15/50 [2.1s, 7.14it/s]`` every ``every`` percent.

    Without a known total it prints after 1, 2, 5, 10, 20, 50 ... items and at the end.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        desc: str | None = None,
        total: int | None = None,
        every: float = 10.0,
        file: IO[str] | None = None,
    ) -> None:
        self.iterable = iterable
        self.desc = desc
        self.total = total
        self.every = every
        self.file = file

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this progress has no known total")
        return self.total

    def _write(self, count: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        rate = f"{count / elapsed:.2f}it/s" if elapsed > 0 else "?it/s"
        head = f"{self.desc}: " if self.desc else ""
        done = f"{100.0 * count / self.total:3.0f}% {count}/{self.total}" if self.total else f"{count}"
        stream = self.file if self.file is not None else sys.stderr
        stream.write(f"{head}{done} [{elapsed:.1f}s, {rate}]\n")
        stream.flush()

    def __iter__(self) -> Iterator[T]:
        started = time.perf_counter()
        count = written = 0
        next_mark = _next_mark(0, self.total, self.every)
        for item in self.iterable:
            yield item
            count += 1
            if count >= next_mark:
                self._write(count, started)
                written = count
                next_mark = _next_mark(count, self.total, self.every)
        if written != count or count == 0:
            self._write(count, started)  # the closing line: where it ended (a short or unknown total)


def _next_mark(count: int, total: int | None, every: float) -> float:
    """The item count at which the next line is due after ``count`` items."""
    if total:
        step = max(total * every / 100.0, 1.0)
        return min((int(count / step + 1e-9) + 1) * step, float(total))
    mark = 1
    while mark <= count:  # 1, 2, 5, 10, 20, 50, ...
        digits = len(str(mark)) - 1
        lead = mark // 10**digits
        mark = (2 if lead == 1 else 5 if lead == 2 else 10) * 10**digits
    return float(mark)


def _interactive(stream: Any) -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def progress_bar(
    iterable: Iterable[T],
    desc: str | None = None,
    total: int | None = None,
    every: float = 10.0,
    mode: Mode = "auto",
    file: IO[str] | None = None,
    **tqdm_kwargs: Any,
) -> Iterable[T]:
    """Wrap ``iterable`` to show progress (see the module docstring for which kind).

    ``mode="bar"`` asks for tqdm's bar even outside a terminal (an error without tqdm);
    ``mode="lines"`` always prints lines. Extra keyword arguments go to tqdm.
    """
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not valid; choose one of {', '.join(_MODES)}.")
    if not (isinstance(every, (int, float)) and not isinstance(every, bool) and 0 < every <= 100):
        raise ValueError(f"every must be a percentage in (0, 100], got {every!r}.")
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    stream = file if file is not None else sys.stderr
    if mode == "lines" or (mode == "auto" and not _interactive(stream)):
        return LineProgress(iterable, desc=desc, total=total, every=every, file=file)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if mode == "bar":
            raise ModuleNotFoundError(
                "progress mode='bar' needs tqdm: pip install tqdm (or use mode='auto' / 'lines')."
            ) from None
        return LineProgress(iterable, desc=desc, total=total, every=every, file=file)
    return tqdm(iterable, desc=desc, total=total, file=file, dynamic_ncols=True, **tqdm_kwargs)
