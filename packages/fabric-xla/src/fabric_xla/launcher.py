"""Starting the replicas of an XLA job with ``torch_xla.launch``, and stopping all of them when one fails."""

from __future__ import annotations

import io
import os
import pickle
import queue
import signal
import threading
import traceback
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fabric_core.plugins.launcher import Launcher

if TYPE_CHECKING:
    from fabric_xla.strategies.data_parallel import XLAStrategy

_POLL_SECONDS = 0.2


class XLAReplicaError(RuntimeError):
    """A replica of an XLA job raised; the message names its rank and carries its traceback."""


class XLALauncher(Launcher):
    """Runs ``function`` on every XLA device of the host through ``torch_xla.launch``.

    One device runs in the calling process. Several devices run in worker processes (one per TPU
    chip; on TPU v2/v3 and the CPU device one process drives its devices from threads). Rank 0's
    return value comes back through a manager queue. When a replica raises, the launcher kills the
    worker processes, so that peers blocked in a collective do not hang, and raises
    ``XLAReplicaError`` naming the rank.
    """

    def __init__(self, strategy: XLAStrategy, start_method: str = "fork") -> None:
        self._strategy = strategy
        self._start_method = start_method

    @property
    def is_interactive_compatible(self) -> bool:
        return self._start_method == "fork"

    @property
    def continues_in_caller(self) -> bool:
        """With one device the replica is the calling process, so ``fabric.launch()`` needs no function."""
        return self._strategy.num_processes == 1

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from fabric_xla.xla_import import require_torch_xla

        torch_xla = require_torch_xla()
        if self._strategy.num_processes == 1:
            holder: list[Any] = []
            torch_xla.launch(_InProcess(function, args, kwargs, holder), debug_single_process=True)
            return holder[0] if holder else None
        return self._launch_workers(torch_xla, function, args, kwargs)

    def _launch_workers(self, torch_xla: Any, function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        import torch.multiprocessing as mp

        context = mp.get_context(self._start_method)
        with context.Manager() as manager:
            events = manager.Queue()
            outcome: dict[str, BaseException] = {}

            def run() -> None:
                try:
                    torch_xla.launch(_Replica(function, args, kwargs, events), start_method=self._start_method)
                except BaseException as err:  # reported below, after the failing rank's own message
                    outcome["error"] = err

            runner = threading.Thread(target=run, name="fabric-xla-launch", daemon=True)
            runner.start()
            result, failure = self._watch(events, runner)
            runner.join()
        if failure is not None:
            rank, text = failure
            raise XLAReplicaError(f"XLA replica with global rank {rank} failed; all replicas were stopped.\n{text}")
        if "error" in outcome:
            err = outcome["error"]
            raise XLAReplicaError(f"The XLA worker processes ended abnormally: {type(err).__name__}: {err}") from err
        return result

    def _watch(self, events: Any, runner: threading.Thread) -> tuple[Any, tuple[int, str] | None]:
        """Collect worker events until the workers end; on a failure kill them all at once."""
        pids: set[int] = set()
        result: Any = None
        while True:
            try:
                kind, rank, payload = events.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not runner.is_alive():
                    break
                continue
            if kind == "started":
                pids.add(payload)
            elif kind == "result":
                result = payload
            elif kind == "failed":
                _kill(pids)
                return result, _first_failed((rank, payload), events)
        return result, None


def _first_failed(failure: tuple[int, str], events: Any) -> tuple[int, str]:
    """Of the failures already reported, the one core's attribution policy blames (lost peers are consequences)."""
    from fabric_core.plugins.failures import RankEnd, first_failure, is_lost_peer

    failures = [failure]
    while True:
        try:
            kind, rank, payload = events.get_nowait()
        except queue.Empty:
            break
        if kind == "failed":
            failures.append((rank, payload))
    ends = [
        RankEnd(rank, raised=text, consequence=is_lost_peer(text), time=float(i))
        for i, (rank, text) in enumerate(failures)
    ]
    first = first_failure(ends)
    assert first is not None and first.raised is not None
    return first.rank, first.raised


def _kill(pids: set[int]) -> None:
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _InProcess:
    """Runs ``function`` in this process and keeps its return value."""

    def __init__(self, function: Callable[..., Any], args: tuple, kwargs: dict, holder: list[Any]) -> None:
        self.function, self.args, self.kwargs, self.holder = function, args, kwargs, holder

    def __call__(self, index: int) -> None:
        self.holder.append(self.function(*self.args, **self.kwargs))


class _TransportPickler(pickle.Pickler):
    """Pickles the job for the worker processes, sending weak containers over empty.

    ``torch_xla.launch`` pickles the function even with ``fork``. Weak sets and dictionaries (a
    Fabric's record of set-up modules, for example) cannot be pickled and only describe objects of
    this process, which the workers do not share, so each worker starts with empty ones.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (weakref.WeakSet, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)):
            return type(obj), ()
        return NotImplemented


def _transport(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _TransportPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _rebuild_replica(job: bytes, events: Any) -> _Replica:
    function, args, kwargs = pickle.loads(job)
    return _Replica(function, args, kwargs, events)


class _Replica:
    """What each replica runs: report its process, run ``function``, report the result or the failure."""

    def __init__(self, function: Callable[..., Any], args: tuple, kwargs: dict, events: Any) -> None:
        self.function, self.args, self.kwargs, self.events = function, args, kwargs, events

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_replica, (_transport((self.function, self.args, self.kwargs)), self.events)

    def __call__(self, index: int) -> None:
        import torch_xla.runtime as xr

        rank = xr.global_ordinal()
        self.events.put(("started", rank, os.getpid()))
        try:
            result = self.function(*self.args, **self.kwargs)
        except BaseException:
            self.events.put(("failed", rank, traceback.format_exc()))
            raise
        if rank == 0:
            self.events.put(("result", rank, result))
