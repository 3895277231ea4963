"""What the experiment-tracker loggers (MLflow, W&B, ...) share.

- Only global rank 0 talks to the tracker (the rank Fabric announced, else the one found in the process
  group or the launcher's environment), and it starts its run on first use, never at construction: the
  logger may be built in a process that is not part of the job, or pickled into spawned workers.
- Metric names get the logger's prefix, values become plain numbers; without a step the logger counts.
- Hyperparameters are flattened the same way for every tracker (``outer/inner``; ``_params.flatten``).
- A run that is never finalized is ended as failed when the interpreter exits, so a crash shows up as one,
  and when SIGTERM arrives (how launchers stop the surviving ranks when one dies; see ``_sigterm``).
"""

from __future__ import annotations

import atexit
import functools
import os
import weakref
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from fabric_core.plugins.logger import Logger, NoOpExperiment

from fabric_loggers import _rank
from fabric_loggers._metrics import check_step, prepare_metrics
from fabric_loggers._params import flatten, params_to_dict, tensorboard_value
from fabric_loggers._sigterm import DefersSigterm

_FAILED = "failed"


def _end_at_exit(logger_ref: weakref.ref, pid: int) -> None:
    logger = logger_ref()
    if logger is not None and pid == os.getpid() and logger._started:
        logger._exit_hook = None  # running now; nothing to unregister
        logger._finish(_FAILED)


class TrackerLogger(DefersSigterm, _rank.RankZeroOnly, Logger):
    """A logger that sends one run to an experiment tracker from global rank 0."""

    #: the separator nested hyperparameter names are joined with
    PARAM_SEPARATOR = "/"
    #: the attributes that hold the tracker library's live objects (run, client): never pickled
    _LIVE_ATTRIBUTES: tuple[str, ...] = ()

    def __init__(self, prefix: str = "", log_checkpoints: bool = False) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}.")
        if not isinstance(log_checkpoints, bool):
            raise TypeError(f"log_checkpoints must be True or False, got {log_checkpoints!r}.")
        self._prefix = prefix
        self._log_checkpoints = log_checkpoints
        self._next_step = 0
        self._rank: int | None = None
        self._started = False
        self._pid: int | None = None
        self._exit_hook: Any = None

    @property
    def prefix(self) -> str:
        return self._prefix

    # -------------------------------------------------------------------- runs
    @property
    def experiment(self) -> Any:
        """The tracker's own run object on rank 0 (started on first use); a ``NoOpExperiment`` elsewhere."""
        if not self.is_writer:
            return NoOpExperiment()
        self._ensure_started()
        return self._native()

    def _ensure_started(self) -> None:
        if self._started and self._pid == os.getpid():
            return
        with self._library_call():
            self._start()
        self._started = True
        self._pid = os.getpid()
        # Registered after the tracker library's own exit hooks, so it runs before them (atexit is LIFO).
        self._exit_hook = functools.partial(_end_at_exit, weakref.ref(self), self._pid)
        atexit.register(self._exit_hook)
        self._watch_sigterm()

    def end_terminated(self) -> None:
        """SIGTERM reached this process while the run was open: end it as failed (see ``_sigterm``)."""
        if self._started and self._pid == os.getpid():
            self._finish(_FAILED)

    @abstractmethod
    def _start(self) -> None:
        """Create or resume the run."""

    @abstractmethod
    def _native(self) -> Any:
        """The tracker's run object."""

    @abstractmethod
    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None: ...

    @abstractmethod
    def _write_params(self, params: Mapping[str, bool | int | float | str]) -> None: ...

    @abstractmethod
    def _end(self, status: str) -> None:
        """End the run with ``status`` ("success", "failed", or anything else the user passes)."""

    def _write_artifact(self, path: str, name: str | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no artifact store.")

    # ----------------------------------------------------------------- logging
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (rank 0 only); without ``step`` one past the last step logged."""
        if not self.is_writer:
            return
        prepared = prepare_metrics(metrics, self._prefix)
        if not self._started or self._pid != os.getpid():
            self._ensure_started()  # a resumed run tells where its steps stopped
        if step is None:
            step = self._next_step
        elif type(step) is not int:
            step = check_step(step)
        self._next_step = step + 1
        self._in_library = True  # as _library_call, spelled out: this is the hot path
        try:
            self._write_metrics(prepared, step)
        finally:
            self._in_library = False
            hook = self._sigterm
            if hook is not None and hook.pending is not None:
                hook.deliver_pending()

    def log_hyperparams(self, params: Mapping[str, Any] | Any, *args: Any, **kwargs: Any) -> None:
        """Record hyperparameters (dict, nested dicts, argparse.Namespace, dataclass) as ``outer/inner`` names."""
        flat = flatten(params_to_dict(params), self.PARAM_SEPARATOR)
        values = {name: tensorboard_value(value) for name, value in flat.items()}
        if not self.is_writer:
            return
        self._ensure_started()
        with self._library_call():
            self._write_params(values)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Store the file or folder at ``path`` with the run (rank 0 only)."""
        if not self.is_writer:
            return
        self._ensure_started()
        with self._library_call():
            self._write_artifact(os.fspath(path), name)

    @property
    def wants_checkpoints(self) -> bool:
        """True when built with ``log_checkpoints=True``: ``fabric.save`` then hands over each checkpoint."""
        return self._log_checkpoints

    def log_checkpoint(self, path: str) -> None:
        """Store a checkpoint ``fabric.save`` wrote (a file, or a folder for sharded checkpoints)."""
        if os.path.exists(path):  # a remote URL (s3://...) is not uploaded again
            self.log_artifact(path, name="checkpoints")

    def finalize(self, status: str) -> None:
        """End the run ("success" or "failed"); a later call to a logging method starts it again (resumed)."""
        if not self.is_writer or not self._started or self._pid != os.getpid():
            return
        self._finish(status)

    def _finish(self, status: str) -> None:
        self._started = False  # first: a SIGTERM during _end must not end the run a second time
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        with self._ending():  # a SIGTERM now (a launcher stopping this rank) waits until the run has ended
            self._end(status)

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Workers get the settings and the run id, never a live client or a rank found elsewhere."""
        state = self.__dict__.copy()
        state.update(_rank=None, _environment_rank=None, _started=False, _pid=None, _exit_hook=None, _sigterm=None)
        state["_in_library"] = False
        state.update(dict.fromkeys(self._LIVE_ATTRIBUTES))
        return state
