"""SIGTERM ends an open tracker run as failed, then the process ends as SIGTERM would have ended it.

Launchers stop the surviving ranks of a job with SIGTERM when one rank dies (``torch.multiprocessing``'s
spawn, torchrun, fabric's own launchers, SLURM at the time limit). Python's default for SIGTERM ends the
process at once, without ``atexit`` hooks, which would leave the run "running" forever. Each logger with
an open run puts one ``EndOnSigterm`` in front of the handler that was there before and hands the signal
on to it afterwards (the default: the process dies by SIGTERM, so launchers see the usual exit status).

A signal that arrives while the logger is inside its tracker library (half-way through a request) waits
until that call returns, so the run is ended through a client in a consistent state.
"""

from __future__ import annotations

import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

Handler = Callable[[int, FrameType | None], Any] | int | None


class Owner(Protocol):
    """The logger side: whether it is inside a library call, and how it ends its run."""

    @property
    def in_library_call(self) -> bool: ...

    def end_terminated(self) -> None: ...


class EndOnSigterm:
    """The SIGTERM handler of one logger's open run (see the module docstring)."""

    def __init__(self, owner: Owner, previous: Handler) -> None:
        self._owner = weakref.ref(owner)
        self._previous = previous
        self._active = True
        #: a SIGTERM that arrived during a library call, handled by ``deliver_pending``
        self.pending: tuple[int, FrameType | None] | None = None

    @classmethod
    def install(cls, owner: Owner) -> EndOnSigterm | None:
        """Put a handler in front of the current one; none where Python cannot (not the main thread) or
        should not (SIGTERM ignored, or a handler installed outside Python) handle the signal."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None or previous == signal.SIG_IGN:
            return None
        hook = cls(owner, previous)
        signal.signal(signal.SIGTERM, hook)
        return hook

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        owner = self._owner() if self._active else None
        if owner is not None and owner.in_library_call:
            self.pending = (signum, frame)  # finished by ``deliver_pending`` when the call returns
            return
        self._fire(signum, frame)

    def deliver_pending(self) -> None:
        """Called by the logger when it leaves its library: act on a SIGTERM that arrived meanwhile."""
        if self.pending is not None:
            signum, frame = self.pending
            self.pending = None
            self._fire(signum, frame)

    def remove(self) -> None:
        """The run ended normally: stop acting on SIGTERM, and give the previous handler back if still ours."""
        self._active = False
        previous = self._previous
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is self:
            signal.signal(signal.SIGTERM, previous)
        # Otherwise someone installed a handler after this one: this one stays in their chain, passing the signal on.

    def _fire(self, signum: int, frame: FrameType | None) -> None:
        owner = self._owner() if self._active else None
        self._active = False
        if owner is not None:
            try:
                owner.end_terminated()
            finally:
                self._hand_on(signum, frame)
        else:
            self._hand_on(signum, frame)

    def _hand_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # die by the signal, as without this handler
