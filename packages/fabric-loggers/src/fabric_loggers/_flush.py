"""When a logger pushes what it has buffered to disk: every N distinct steps and/or every S seconds.

What a crash loses is bounded by this schedule, so it is checked on every write rather than left to a
background thread that a killed process would never run.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _check_steps(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"flush_logs_every_n_steps must be a positive int or None (flush only on save), got {value!r}."
        )
    return value


def _check_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"flush_logs_every_n_seconds must be a positive number or None, got {value!r}.")
    return float(value)


class FlushSchedule:
    """Counts the distinct steps and the time since the last flush."""

    def __init__(
        self,
        every_n_steps: int | None,
        every_n_seconds: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_n_steps = _check_steps(every_n_steps)
        self.every_n_seconds = _check_seconds(every_n_seconds)
        self.clock = clock
        self._steps = 0
        self._last_step: int | None = None
        self._last_flush = clock()

    def record(self, step: int) -> bool:
        """Note a write at ``step``; true when a flush is due now."""
        if step != self._last_step:
            self._steps += 1
            self._last_step = step
        if self.every_n_steps is not None and self._steps >= self.every_n_steps:
            return True
        return self.every_n_seconds is not None and self.clock() - self._last_flush >= self.every_n_seconds

    def flushed(self) -> None:
        """Start counting again after a flush."""
        self._steps = 0
        self._last_flush = self.clock()
