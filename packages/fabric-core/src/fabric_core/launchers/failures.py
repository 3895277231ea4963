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


def record_failures(rank: int) -> None:
    """In a worker: record an uncaught exception at once, where the launcher looks for it.

    Fabric's subprocess launcher reads ``FABRIC_FAILURE_DIR``; torch's elastic agent (torchrun,
    ``fabric run``) reads ``TORCHELASTIC_ERROR_FILE``, and with the exception's time it reports the
    rank that failed first rather than the ranks that failed because of it. A chained hook.
    """
    folder = os.environ.get(FAILURE_DIR_ENV)
    elastic = "TORCHELASTIC_ERROR_FILE" in os.environ
    if not folder and not elastic:
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if is_lost_peer(value):  # a consequence of another rank's failure, not a cause
            previous(kind, value, tb)
            return
        if folder:
            try:
                (Path(folder) / str(rank)).write_text(f"{time.time()} {kind.__name__}")
            except OSError:
                pass
        if elastic and isinstance(value, Exception):
            _write_elastic_error_file(kind, value, tb)
        previous(kind, value, tb)

    sys.excepthook = hook


LOST_PEER_MARKERS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


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
