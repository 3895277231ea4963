"""Describing how a worker process ended, in words a user understands."""

from __future__ import annotations

import os
import signal
import sys
import time
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
