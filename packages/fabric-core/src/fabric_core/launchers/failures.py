"""Describing how a worker process ended, in words a user understands."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from fabric_core.errors import FabricError

#: Set by the subprocess launcher: a folder where its workers record an uncaught exception at once,
#: so the launcher can name the rank that failed first even while that process is still exiting.
FAILURE_DIR_ENV = "FABRIC_FAILURE_DIR"


class WorkerFailedError(FabricError, RuntimeError):
    """A process of the job failed; the whole job was stopped."""


def describe_exit(returncode: int) -> str:
    """``"exited with code 1"`` or ``"was killed by SIGKILL"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


#: How long a rank whose collective lost its peer waits, under torch's elastic agent, for the agent to stop it.
CONSEQUENCE_GRACE_SECONDS = 10.0


class FailureRecorder:
    """``sys.excepthook`` in a worker: record an uncaught exception at once, where the launcher looks for it.

    Fabric's launchers read ``FABRIC_FAILURE_DIR``; torch's elastic agent (torchrun, ``fabric run``) reads
    ``TORCHELASTIC_ERROR_FILE``. With the exception's time they report the rank that failed first rather than
    the ranks that failed because of it. Chains to the hook it replaced; ``remove()`` puts that one back.

    A collective that lost its peer is a consequence, not a cause: it is not recorded, and under the elastic
    agent the process waits (up to ``CONSEQUENCE_GRACE_SECONDS``) for the agent to stop it. Exiting at once
    would let the agent see this rank and the one that failed first in the same poll; torch then blames the
    lowest rank on a tie of its whole-second timestamps (rank 0, here the consequence).
    """

    def __init__(self, rank: int, folder: str | None, elastic: bool) -> None:
        self.rank = rank
        self._folder = folder
        self._elastic = elastic
        self._previous = sys.excepthook
        self._active = True

    @classmethod
    def install(cls, rank: int) -> FailureRecorder | None:
        """Chain a recorder into ``sys.excepthook``; ``None`` (nothing installed) outside a Fabric or torch launcher."""
        folder = os.environ.get(FAILURE_DIR_ENV) or None
        elastic = "TORCHELASTIC_ERROR_FILE" in os.environ
        if not folder and not elastic:
            return None
        recorder = cls(rank, folder, elastic)
        sys.excepthook = recorder
        return recorder

    def remove(self) -> None:
        """Put back the hook this one replaced; if another hook was chained on top since, only stop recording."""
        self._active = False
        if sys.excepthook is self:
            sys.excepthook = self._previous

    def __call__(self, kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not self._active:
            self._previous(kind, value, tb)
            return
        if is_lost_peer(value):
            self._previous(kind, value, tb)
            if self._elastic:
                _wait_to_be_stopped(CONSEQUENCE_GRACE_SECONDS)
            return
        if self._folder:
            try:
                (Path(self._folder) / str(self.rank)).write_text(f"{time.time()} {kind.__name__}")
            except OSError:
                pass
        if self._elastic and isinstance(value, Exception):
            _write_elastic_error_file(kind, value, tb)
        self._previous(kind, value, tb)


def _wait_to_be_stopped(seconds: float) -> None:
    """Sleep so that the supervising agent, which stops every rank once one fails, sees the failed rank first.

    Only where a local peer can be the cause (``LOCAL_WORLD_SIZE`` > 1): a peer on another node is not watched
    by this node's agent, and the wait would only delay the end of the job.
    """
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1") or "1") <= 1:
        return
    sys.stderr.flush()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


#: What gloo and the c10d store say when the other end of a connection went away (that process ended).
LOST_PEER_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Connection was likely closed",  # the c10d store's client: the process hosting the store ended
)


def is_lost_peer(error: BaseException | str) -> bool:
    """Whether ``error`` (an exception or its traceback) is a collective failing because a peer went away."""
    return any(marker in str(error) for marker in LOST_PEER_MARKERS)


def _write_elastic_error_file(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """Record the exception where torch's elastic agent reads it (its own helper loses the traceback here)."""
    import json
    import traceback

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):
        return
    data = {
        "message": {
            "message": f"{kind.__name__}: {value}",
            "extraInfo": {
                "py_callstack": "".join(traceback.format_exception(kind, value, tb)),
                "timestamp": str(int(time.time())),
            },
        }
    }
    try:
        with open(path, "w") as f:
            json.dump(data, f)
    except OSError:
        pass


def recorded_failures(folder: str | None) -> list[tuple[float, int, str]]:
    """(time, rank, exception name) of each recorded failure, the earliest first."""
    found = []
    for entry in Path(folder).iterdir() if folder and os.path.isdir(folder) else ():
        try:
            stamp, name = entry.read_text().split(" ", 1)
            found.append((float(stamp), int(entry.name), name))
        except (OSError, ValueError):
            continue
    return sorted(found)


#: Signals a launcher sends itself while stopping a job: a rank ended by one of them was stopped, it did not fail.
STOP_SIGNALS = ("SIGTERM", "SIGINT")


@dataclass(frozen=True)
class RankEnd:
    """What a launcher knows about how one rank ended (or failed while still exiting).

    ``exitcode``: the process's exit status when known (negative: killed by that signal), else ``None``.
    ``raised``: the exception (name or traceback) the rank recorded, else ``None``.
    ``consequence``: the failure is known to follow another rank's (a collective that lost its peer).
    ``time``: when the failure was recorded or observed; earlier wins among equals, ``None`` sorts last.
    """

    rank: int
    exitcode: int | None = None
    raised: str | None = None
    consequence: bool = False
    time: float | None = None


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def first_failure(ends: list[RankEnd]) -> RankEnd | None:
    """The rank to blame for a failed job: the one that failed first, not the ones that failed because of it.

    The one policy every launcher (and ``fabric run``) applies, in this order:

    1. a rank killed by a signal the launcher did not send (SIGKILL, SIGSEGV ...): it recorded nothing,
       and its peers then fail on the lost connection;
    2. a rank that raised an exception that is not a consequence (a collective losing its peer);
    3. a rank that exited non-zero without raising (``os._exit``, a crash in native code);
    4. a rank whose failure is a consequence;
    5. any other rank reported as failed.

    Within a step the earliest ``time`` wins, then the order of ``ends``. ``None`` when ``ends`` is empty.
    """

    def step(end: RankEnd) -> int:
        name = _signal_name(end.exitcode)
        if name is not None and name not in STOP_SIGNALS and end.raised is None:
            return 1
        if end.raised is not None and not end.consequence:
            return 2
        if end.raised is None and not end.consequence and end.exitcode not in (None, 0) and name is None:
            return 3
        if end.consequence:
            return 4
        return 5

    ordered = sorted(
        enumerate(ends),
        key=lambda pair: (step(pair[1]), pair[1].time is None, pair[1].time or 0.0, pair[0]),
    )
    return ordered[0][1] if ordered else None
