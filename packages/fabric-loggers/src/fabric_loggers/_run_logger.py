"""What the file loggers share: the run folder, writing on global rank 0 only, the flush schedule.

The object that owns open files (a "sink") is created on rank 0's first write, never at construction:
the logger may be built in a process that is not part of the job, pickled into spawned workers, or
inherited through ``fork``. The sink is dropped when pickling and re-created when the process id
changes, so no worker ever touches a file handle or writer thread it did not open.

Everything logged reaches the files when the run is finalized, when the interpreter exits, and when
SIGTERM arrives (how launchers stop the surviving ranks of a job; the same handler as the tracker
loggers', see ``_sigterm``: the sink flushes, then the process dies by SIGTERM as it would have).
"""

from __future__ import annotations

import atexit
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from fabric_core.plugins.logger import Logger, NoOpExperiment

from fabric_loggers import _rank, _remote, _versions
from fabric_loggers._flush import FlushSchedule
from fabric_loggers._metrics import check_step, prepare_metrics
from fabric_loggers._sigterm import DefersSigterm


class Sink(DefersSigterm, ABC):
    """The open files of one run in one process; what it holds reaches disk on SIGTERM too.

    Every write and flush is a library call in ``_sigterm``'s sense: a SIGTERM arriving half-way waits
    until it returns, so the flush it triggers never sees a half-added row or a writer lock held by the
    interrupted call, and never writes a row twice.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()

    @abstractmethod
    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None: ...

    @abstractmethod
    def _flush(self) -> None: ...

    @abstractmethod
    def _close(self, status: str | None) -> None: ...

    def write_metrics(self, metrics: Mapping[str, int | float], step: int, flush: bool = False) -> None:
        """Add one step's metrics, then flush if ``flush`` (the logger's hot path: no context manager)."""
        outer = self._in_library
        self._in_library = True
        try:
            self._write_metrics(metrics, step)
            if flush:
                self._flush()
        finally:
            self._in_library = outer
            hook = self._sigterm
            if not outer and hook is not None and hook.pending is not None:
                hook.deliver_pending()

    def flush(self) -> None:
        with self._library_call():
            self._flush()

    def close(self, status: str | None) -> None:
        """Flush and close the files; SIGTERM is no longer this sink's business."""
        with self._ending():
            self._close(status)

    def end_terminated(self) -> None:
        """SIGTERM arrived (not during a write): push what is buffered to disk before the process dies."""
        if self.pid == os.getpid():  # a forked child inherits the handler, not the files
            self._flush()


def _close_at_exit(sink: Sink) -> None:
    """Interpreter exit (or the logger being collected): keep what was logged. Not in a forked child."""
    if sink.pid == os.getpid():
        sink.close(None)


class RunLogger(_rank.RankZeroOnly, Logger):
    """A logger that writes one run's files under ``root_dir/name/version``, on global rank 0 only."""

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        name: str | None,
        version: int | str | None,
        prefix: str,
        flush_logs_every_n_steps: int | None,
        flush_logs_every_n_seconds: float | None,
    ) -> None:
        if not isinstance(root_dir, (str, os.PathLike)) or not os.fspath(root_dir):
            raise TypeError(f"root_dir must be a folder path (str or os.PathLike), got {root_dir!r}.")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None (no experiment folder), got {name!r}.")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {prefix!r}.")
        self._root_dir = os.fspath(root_dir)
        self._name = name or ""
        self._version = _versions.check_version(version)
        self._prefix = prefix
        self._schedule = FlushSchedule(flush_logs_every_n_steps, flush_logs_every_n_seconds)
        self._next_step = 0  # the step of a log_metrics call without one: one past the last step logged
        self._rank: int | None = None  # cached once an initialised process group has said it
        self._sink: Sink | None = None
        self._exit_hook: weakref.finalize | None = None

    # ------------------------------------------------------------------ layout
    @property
    def name(self) -> str:
        """The experiment folder under ``root_dir`` (``""`` for none)."""
        return self._name

    @property
    def root_dir(self) -> str:
        return self._root_dir

    @property
    def version(self) -> int | str:
        """This run's version. On rank 0 the first access claims the next free ``version_N`` folder.

        Other ranks only look at the folder and create nothing; if they need the same value as rank 0
        without a race, pass ``version=`` explicitly.
        """
        if self._version is None:
            if self.is_writer:
                self._version = _versions.claim_next_version(self._experiment_dir)
            else:
                return _versions.next_free_version(self._experiment_dir)
        return self._version

    @property
    def log_dir(self) -> str:
        """``root_dir/name/version_N``: the folder (or fsspec URL) this run writes to."""
        return self._join(self._experiment_dir, _versions.version_dirname(self.version))

    @property
    def _experiment_dir(self) -> str:
        root = os.path.expanduser(os.path.expandvars(self._root_dir))  # "~/logs", "$SCRATCH/logs"
        return self._join(root, self._name) if self._name else root

    def _join(self, base: str, *parts: str) -> str:
        return _remote.join(base, *parts) if _remote.is_url(self._root_dir) else os.path.join(base, *parts)

    @property
    def prefix(self) -> str:
        return self._prefix

    # ----------------------------------------------------------------- writing
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` (rank 0 only), flushing when the schedule says so.

        Without ``step`` this logger counts its own: one past the last step it logged (0 first).
        """
        if not self.is_writer:
            return
        prepared = prepare_metrics(metrics, self._prefix)
        if step is None:
            step = self._next_step
        elif type(step) is not int:
            step = check_step(step)
        self._next_step = step + 1
        sink = self._sink  # the hot path of _open_sink: this process's sink, already open
        if sink is None or sink.pid != os.getpid():
            sink = self._open_sink()
        due = self._schedule.record(step)
        sink.write_metrics(prepared, step, flush=due)
        if due:
            self._schedule.flushed()

    def save(self) -> None:
        """Push everything logged so far to disk."""
        if self.is_writer and self._current_sink() is not None:
            self._current_sink().flush()  # type: ignore[union-attr]
            self._schedule.flushed()

    def finalize(self, status: str) -> None:
        """Flush and close the files; a later write opens them again (TensorBoard starts a new event file)."""
        sink = self._current_sink()
        if not self.is_writer or sink is None:
            return
        sink.close(status)
        self._sink = None
        if self._exit_hook is not None:
            self._exit_hook.detach()
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        self._schedule.flushed()

    @property
    def experiment(self) -> Any:
        """The object that writes this run's files on rank 0; a ``NoOpExperiment`` on other ranks."""
        if not self.is_writer:
            return NoOpExperiment()
        return self._open_sink()

    # ------------------------------------------------------------------- sinks
    @abstractmethod
    def _create_sink(self, log_dir: str) -> Sink:
        """Open this logger's files in ``log_dir`` (which exists)."""

    def _current_sink(self) -> Sink | None:
        """The sink this process opened, forgetting one inherited through ``fork`` (its writer thread is gone)."""
        if self._sink is not None and self._sink.pid != os.getpid():
            self._sink = None
            self._exit_hook = None  # the parent's hook; it refuses to run in this process anyway
        return self._sink

    def _open_sink(self) -> Sink:
        sink = self._current_sink()
        if sink is None:
            log_dir = self.log_dir
            if _remote.is_url(log_dir):
                _remote.makedirs(log_dir)
            else:
                os.makedirs(log_dir, exist_ok=True)
            sink = self._create_sink(log_dir)
            self._sink = sink
            # Closed when the logger is collected, and at exit by a hook of its own: registered now, after
            # ``fabric.launch()``, it runs before the launcher's exit hook, which may end the process with
            # ``os._exit`` when another rank failed (weakref.finalize's shared exit hook may be older). A
            # finalize object runs once, whichever calls it first.
            self._exit_hook = weakref.finalize(self, _close_at_exit, sink)
            atexit.register(self._exit_hook)
            sink._watch_sigterm()
        return sink

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """Workers get the settings, never the open files, writer threads or a rank found elsewhere."""
        state = self.__dict__.copy()
        state.update(_sink=None, _exit_hook=None, _rank=None, _environment_rank=None)
        return state
