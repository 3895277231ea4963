"""SIGTERM ends an open run (a tracker run as failed; the file loggers flush), then the process ends as
SIGTERM would have ended it.

Launchers stop the surviving ranks of a job with SIGTERM when one rank dies (``torch.multiprocessing``'s
spawn, torchrun, fabric's own launchers, SLURM at the time limit). Python's default for SIGTERM ends the
process at once, without ``atexit`` hooks, which would leave a tracker run "running" forever and lose what
a file logger buffered. Each open run (a tracker logger's run, a file logger's open files) puts one
``EndOnSigterm`` in front of the handler that was there before and hands the signal on to it afterwards
(the default: the process dies by SIGTERM, so launchers see the usual exit status).

A signal that arrives while the owner is inside a library call or a write (half-way through a request, a
row, an event) waits until that call returns (``DefersSigterm``), so the run is ended from a consistent
state: no half-written file, no lock of the writer held by the interrupted call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
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


class DefersSigterm:
    """Mixin of an ``Owner``: the hook it installs, and the calls during which a SIGTERM waits for their end."""

    _sigterm: EndOnSigterm | None = None
    _in_library: bool = False  # inside a library call or a write: a SIGTERM waits until it returns

    @property
    def in_library_call(self) -> bool:
        return self._in_library

    def end_terminated(self) -> None:
        """SIGTERM arrived, outside any library call: end the run (each owner says how)."""
        raise NotImplementedError

    def _watch_sigterm(self) -> None:
        """Act on SIGTERM from now on (``end_terminated``), until ``_ending`` (main thread only, see ``install``)."""
        self._sigterm = EndOnSigterm.install(self)

    @contextlib.contextmanager
    def _library_call(self) -> Iterator[None]:
        """Mark a call that a SIGTERM must not interrupt half-way; the signal is acted on when it returns."""
        outer = self._in_library
        self._in_library = True
        try:
            yield
        finally:
            self._in_library = outer
            hook = self._sigterm
            if not outer and hook is not None and hook.pending is not None:
                hook.deliver_pending()

    @contextlib.contextmanager
    def _ending(self) -> Iterator[None]:
        """The run ends inside this block: a SIGTERM meanwhile waits, then (the hook removed) is handed on."""
        hook, self._sigterm = self._sigterm, None  # first: a SIGTERM now must not end the run a second time
        try:
            with self._library_call():  # the signal waits on ``hook`` (still the handler), not delivered here
                yield
        finally:
            if hook is not None:
                hook.remove()
                hook.deliver_pending()
