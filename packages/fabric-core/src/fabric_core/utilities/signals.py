"""SIGUSR1/SIGTERM turned into a flag the training loop reads, so it can save a checkpoint and exit.

SLURM sends SIGUSR1 (``sbatch --signal=USR1@90``) shortly before a job's time limit and SIGTERM when
it preempts or cancels a job; other schedulers (Kubernetes, LSF) send SIGTERM. By default either
signal ends the process at once and the work since the last checkpoint is lost. Once the loop asks
``fabric.requeue_requested``, these signals only set a flag and the loop decides when to stop.
"""

from __future__ import annotations

import signal
import threading
import warnings
from collections.abc import Callable
from types import FrameType

#: The signals a scheduler sends before it stops a job, in the order users meet them.
REQUEUE_SIGNALS = ("SIGUSR1", "SIGTERM")

_Handler = Callable[[int, FrameType | None], object] | int | None


class RequeueSignals:
    """Records that SIGUSR1 or SIGTERM reached this process.

    The handlers are installed by the first call of :meth:`watch` (the first time the loop asks),
    never at import or construction: a process whose loop does not ask keeps the default
    behaviour, where these signals end it. Signal handlers belong to the main thread; from another
    thread nothing is installed and a warning says so.
    """

    def __init__(self) -> None:
        self._received: int | None = None
        self._installed = False
        self._previous: dict[int, _Handler] = {}

    @property
    def received(self) -> str | None:
        """The name of the first signal received (``"SIGUSR1"``), or ``None``."""
        return signal.Signals(self._received).name if self._received is not None else None

    def watch(self) -> bool:
        """Install the handlers (once) and return whether a signal has arrived since."""
        if not self._installed:
            self._install()
        return self._received is not None

    def _install(self) -> None:
        self._installed = True
        if threading.current_thread() is not threading.main_thread():
            warnings.warn(
                "fabric.requeue_requested was first read outside the main thread, where Python cannot install "
                "signal handlers: SIGUSR1/SIGTERM keep their default action (they end the process). "
                "Read it once from the main thread, before the training loop.",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        for name in REQUEUE_SIGNALS:
            number = getattr(signal, name, None)  # SIGUSR1 does not exist on Windows
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._received is None:
            self._received = signum
        # Another Fabric object in this process may be watching too: pass the signal on to it.
        previous = self._previous.get(signum)
        if isinstance(getattr(previous, "__self__", None), RequeueSignals) and callable(previous):
            previous(signum, frame)

    def __getstate__(self) -> dict[str, object]:
        # Travels to spawned workers unarmed: handlers belong to the process that installed them.
        return {"_received": None, "_installed": False, "_previous": {}}
