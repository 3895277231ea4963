"""Starting the ranks with ``torch.multiprocessing`` (strategy="ddp_spawn", "ddp_fork", "ddp_notebook")."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fabric_core.launchers.failures import RankEnd, WorkerFailedError, describe_exit, first_failure, is_lost_peer
from fabric_core.plugins.launcher import Launcher

if TYPE_CHECKING:
    from fabric_core.strategies.process_group import ProcessGroupStrategy


class MultiprocessingLauncher(Launcher):
    """Runs ``fabric.launch(fn)``'s function in one new process per local device.

    ``torch.multiprocessing`` watches the workers: when one fails the others are terminated and
    this raises ``WorkerFailedError`` naming the rank and how it ended. Returns rank 0's result.
    """

    def __init__(self, strategy: ProcessGroupStrategy, start_method: str = "spawn") -> None:
        if start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(
                f"start_method={start_method!r} is not available on this platform; available: "
                f"{', '.join(multiprocessing.get_all_start_methods())}."
            )
        self._strategy = strategy
        self._start_method = start_method

    @property
    def is_interactive_compatible(self) -> bool:
        return self._start_method == "fork"

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import torch
        import torch.distributed as dist
        import torch.multiprocessing as mp

        if self._start_method == "fork" and torch.cuda.is_initialized():
            raise RuntimeError(
                "CUDA was initialised in this process before forking; forked workers cannot use it. Do not touch CUDA "
                "before fabric.launch(), or use strategy='ddp_spawn'."
            )
        if multiprocessing.parent_process() is not None and self._start_method != "fork":
            raise RuntimeError(
                "fabric.launch() ran again while a spawned worker was importing your script: put the code that "
                'creates Fabric and calls launch() under `if __name__ == "__main__":`.'
            )
        strategy = self._strategy
        env = strategy.cluster_environment
        assert env is not None
        world_size = strategy.num_processes * strategy.num_nodes
        address, port = env.main_address, env.main_port
        store = None
        if strategy.node_rank == 0 and port == 0:
            store = dist.TCPStore(
                address, 0, world_size, is_master=True, timeout=strategy.timeout, wait_for_workers=False
            )
            port = store.port
        elif port == 0:
            raise RuntimeError("A multi-node job needs MASTER_ADDR and MASTER_PORT set on every node.")
        context = mp.get_context(self._start_method)
        results = context.SimpleQueue()
        process_context = mp.start_processes(
            _worker,
            args=(strategy, function, args, kwargs, results, address, port, store is not None),
            nprocs=strategy.num_processes,
            join=False,
            start_method=self._start_method,
        )
        previous_sigterm = _raise_on_sigterm()
        try:
            while not process_context.join():
                pass
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as err:
            raise self._failure(process_context, err) from None
        except BaseException:
            # Ctrl-C or SIGTERM to the launcher: stop the workers instead of leaving them training.
            _stop(process_context.processes)
            raise
        finally:
            _restore_sigterm(previous_sigterm)
            del store
            _remove_error_files(process_context.error_files)
        if results.empty():
            return None
        import io

        import torch

        # Our own worker serialised it (see _worker); not an untrusted file.
        return torch.load(io.BytesIO(results.get()), weights_only=False)

    def _failure(self, context: Any, err: Exception) -> WorkerFailedError:
        """Name the rank that failed first (the others usually fail because it disappeared): see ``first_failure``."""
        import signal

        base = self._strategy.node_rank * self._strategy.num_processes
        raised = _raised_tracebacks(context.error_files)
        with_traceback = {index for index, _ in raised}
        ends = [
            RankEnd(base + index, raised=trace, consequence=is_lost_peer(trace), time=float(order))
            for order, (index, trace) in enumerate(raised)
        ]
        ends += [
            RankEnd(base + index, exitcode=process.exitcode)
            for index, process in enumerate(context.processes)
            if process.exitcode not in (None, 0, -signal.SIGTERM) and index not in with_traceback
        ]
        first = first_failure(ends)
        if first is not None and first.raised is None:
            return WorkerFailedError(
                f"rank {first.rank} {describe_exit(first.exitcode or 0)}; the other processes of the job were stopped."
            )
        if first is not None:
            pool = [e for e in ends if e.raised is not None and e.consequence == first.consequence]
            others = [e.rank for e in pool if e is not first]
            note = f" Ranks {others} failed after it." if others else ""
            return WorkerFailedError(
                f"rank {first.rank} raised an exception; the job was stopped.{note}\n\n{first.raised}"
            )
        index = getattr(err, "error_index", 0)
        signal_name = getattr(err, "signal_name", None)
        how = f"was killed by {signal_name}" if signal_name else f"exited with code {getattr(err, 'exit_code', '?')}"
        return WorkerFailedError(f"rank {base + index} {how}; the other processes of the job were stopped.")


class _Terminated(SystemExit):
    """SIGTERM reached the launcher."""


def _raise_on_sigterm() -> Any:
    """While the launcher waits, turn SIGTERM into an exception so the workers get stopped."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _stop(processes: list[Any], grace: float = 5.0) -> None:
    """Terminate worker processes, then kill those still alive after ``grace`` seconds."""
    import time

    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def _raised_tracebacks(error_files: list[str | None]) -> list[tuple[int, str]]:
    """(local index, traceback) of each worker that raised, the earliest first."""
    import pickle

    found = []
    for index, path in enumerate(error_files):
        if path and os.path.isfile(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as fh:
                found.append((os.path.getmtime(path), index, str(pickle.load(fh))))  # written by torch in our worker
    return [(index, trace) for _, index, trace in sorted(found)]


def _remove_error_files(error_files: list[str | None]) -> None:
    for path in error_files:
        if path and os.path.isfile(path):
            os.unlink(path)


def _worker(
    local_rank: int,
    strategy: ProcessGroupStrategy,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    results: Any,
    address: str,
    port: int,
    parent_holds_store: bool,
) -> None:
    import torch.distributed as dist

    from fabric_core.utilities.apply_func import move_to_device

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    strategy.set_local_rank(local_rank)
    _unshare_modules((args, kwargs))
    if parent_holds_store:
        strategy._store = dist.TCPStore(address, port, strategy.world_size, is_master=False, timeout=strategy.timeout)
    output = function(*args, **kwargs)
    if strategy.global_rank == 0:
        import io

        import torch

        # As bytes: tensors sent through the queue would live in this worker's shared memory, which is
        # gone by the time the parent reads them.
        buffer = io.BytesIO()
        torch.save(move_to_device(output, "cpu"), buffer)
        results.put(buffer.getvalue())


def _unshare_modules(data: Any) -> None:
    """Give the modules passed to a spawned worker their own copy of parameters and buffers.

    Arguments reach a spawned worker through shared memory; a module whose tensors stayed shared
    would have every rank update the same weights (and the parent see them change). Tied weights
    stay tied, as each tensor is copied once. As in Lightning, only CPU tensors are concerned.
    """
    import itertools

    import torch

    if isinstance(data, torch.nn.Module):
        with torch.no_grad():
            for tensor in itertools.chain(data.parameters(), data.buffers()):
                if tensor.device.type == "cpu" and tensor.is_shared():
                    tensor.data = tensor.data.clone()
    elif isinstance(data, dict):
        for value in data.values():
            _unshare_modules(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            _unshare_modules(value)
