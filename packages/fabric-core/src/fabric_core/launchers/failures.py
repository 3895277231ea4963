"""Describing how a worker process ended, in words a user understands."""

from __future__ import annotations

import signal

from fabric_core.errors import FabricError


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
