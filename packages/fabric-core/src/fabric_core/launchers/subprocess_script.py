"""Re-running the user's script for the other ranks (strategy="ddp"): works from any script, no pickling."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fabric_core.launchers.failures import FAILURE_DIR_ENV, RankEnd, describe_exit, first_failure, recorded_failures
from fabric_core.plugins.launcher import Launcher

if TYPE_CHECKING:
    from fabric_core.launchers.forked_workers import ForkedWorker
    from fabric_core.strategies.process_group import ProcessGroupStrategy

_POLL_SECONDS = 0.1
_GRACE_SECONDS = 5.0
_INTERRUPTED_GRACE_SECONDS = 60.0  # for rank 0 to unwind and run its exit hooks once interrupted


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent (the launcher) dies, so no worker is orphaned.

    Called in a child before exec, or by a worker for itself; a no-op where prctl is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        parent = os.getppid()
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _interrupt_main_thread(rank: int) -> bool:
    """Deliver SIGINT to the main thread when Python turns it into ``KeyboardInterrupt`` (or the user handles it).

    ``False`` when SIGINT is ignored or has no Python handler: nothing would unwind the main thread.
    """
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        return False
    print(f"[fabric] interrupting rank {rank} (as Ctrl-C would) to stop the job.", file=sys.stderr, flush=True)
    main = threading.main_thread().ident
    if main is None:
        return False
    signal.pthread_kill(main, signal.SIGINT)
    return True


def script_command() -> list[str]:
    """The command line that re-runs the current program (``python script.py ...`` or ``python -m pkg ...``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", name, *sys.argv[1:]]
    main_file = getattr(main, "__file__", None)
    if not main_file:
        raise RuntimeError(
            "strategy='ddp' re-runs your script for the other processes, but this session has no script file "
            "(notebook or interactive shell). Use strategy='ddp_notebook' (fork) there."
        )
    return [sys.executable, os.path.abspath(main_file), *sys.argv[1:]]


class SubprocessScriptLauncher(Launcher):
    """Starts local ranks 1..n-1 as new processes running the same command; this process is local rank 0.

    A watchdog thread follows the workers: when one fails, the others are stopped and this process
    exits non-zero with a message naming the rank. Workers die with this process (PDEATHSIG).
    """

    def __init__(self, strategy: ProcessGroupStrategy) -> None:
        self._strategy = strategy
        self._procs: dict[int, subprocess.Popen[bytes] | ForkedWorker] = {}
        self._failed = threading.Event()
        self._done = threading.Event()
        self._failure_dir: str | None = None

    @property
    def is_interactive_compatible(self) -> bool:
        return False

    @property
    def continues_in_caller(self) -> bool:
        return True

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._start_workers()
        return function(*args, **kwargs)

    def _start_workers(self) -> None:
        import torch.distributed as dist

        strategy = self._strategy
        env = strategy.cluster_environment
        assert env is not None
        command = script_command()
        num_local = strategy.num_processes
        world_size = num_local * strategy.num_nodes
        address, port = env.main_address, env.main_port
        from fabric_core.launchers.forked_workers import fork_refusal, fork_workers

        refusal = fork_refusal() if num_local > 1 else "one process"
        forking = refusal is None  # else fresh interpreters (see forked_workers)
        if num_local > 1 and refusal is not None:
            import logging

            logging.getLogger(__name__).debug("The other ranks start in new interpreters: %s.", refusal)
        if strategy.node_rank == 0 and port == 0 and not forking:
            # Bind the rendezvous store now on a free port and hand it over: no race for ports.
            store = dist.TCPStore(
                address, 0, world_size, is_master=True, timeout=strategy.timeout, wait_for_workers=False
            )
            strategy._store = store
            port = store.port
        elif port == 0 and strategy.node_rank != 0:
            raise RuntimeError(
                "A multi-node job needs MASTER_ADDR and MASTER_PORT set on every node (rank 0's host and a free port)."
            )
        strategy.set_local_rank(0)
        if num_local > 1:
            import tempfile

            self._failure_dir = tempfile.mkdtemp(prefix="fabric-failures-")
        child_envs: dict[int, dict[str, str]] = {}
        for local_rank in range(1, num_local):
            child_envs[local_rank] = {
                "MASTER_ADDR": address,
                "MASTER_PORT": str(port),
                "NODE_RANK": str(strategy.node_rank),
                "LOCAL_RANK": str(local_rank),
                "LOCAL_WORLD_SIZE": str(num_local),
                "RANK": str(strategy.node_rank * num_local + local_rank),
                "WORLD_SIZE": str(world_size),
                "FABRIC_LAUNCHED": "1",
                FAILURE_DIR_ENV: self._failure_dir or "",
            }
        if forking:
            workers = fork_workers(strategy, child_envs, bind_store=strategy.node_rank == 0 and port == 0)
            if workers is None:
                return  # this is a forked worker: it goes on with the script as its local rank
            self._procs.update(workers)
        else:
            for local_rank, variables in child_envs.items():
                self._procs[local_rank] = subprocess.Popen(
                    command, env={**os.environ, **variables}, preexec_fn=die_with_parent
                )
        if self._procs:
            threading.Thread(target=self._watch, name="fabric-worker-watchdog", daemon=True).start()
            atexit.register(self._wait_at_exit)
            self._chain_excepthook()

    def _global_rank(self, local_rank: int) -> int:
        return self._strategy.node_rank * self._strategy.num_processes + local_rank

    def _watch(self) -> None:
        while not self._done.is_set():
            for local_rank, proc in self._procs.items():
                code = proc.poll()
                if code is not None and code != 0:
                    if not self._failed.is_set():  # not one we stopped ourselves
                        self._fail(local_rank, code)
                    return
            if all(p.poll() is not None for p in self._procs.values()):
                return
            time.sleep(_POLL_SECONDS)

    def _raised(self, local_rank: int) -> str:
        """``" after raising ValueError"`` when the worker recorded its exception, else ``""``."""
        rank = self._global_rank(local_rank)
        names = [name for _, r, name in recorded_failures(self._failure_dir) if r == rank]
        return f" after raising {names[0]}" if names else ""

    def _fail(self, local_rank: int, code: int) -> None:
        self._failed.set()
        print(
            f"[fabric] rank {self._global_rank(local_rank)} {describe_exit(code)}{self._raised(local_rank)}; "
            "stopping the other processes of the job.",
            file=sys.stderr,
            flush=True,
        )
        self.kill_workers()
        # Give the main thread a moment to fail on its own (its collectives see the closed peers). One busy
        # elsewhere (computing, saving, sleeping) is interrupted as by Ctrl-C, so that its `finally` blocks,
        # context managers and exit hooks run; only one stuck in native code is ended with os._exit.
        if self._done.wait(_GRACE_SECONDS):
            return
        if _interrupt_main_thread(self._global_rank(0)) and self._done.wait(_INTERRUPTED_GRACE_SECONDS):
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # os._exit drops what is still buffered
            except (OSError, ValueError):
                pass
        os._exit(1)

    def _first_dead_worker(self, wait: float) -> tuple[int, int] | None:
        """(local rank, exit code) of a worker that exited non-zero, waiting up to ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            for local_rank, proc in self._procs.items():
                code = proc.poll()
                if code is not None and code != 0:
                    return local_rank, code
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_SECONDS)

    def kill_workers(self) -> None:
        """Terminate every worker still running (SIGTERM, then SIGKILL after a grace period)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + _GRACE_SECONDS
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _wait_at_exit(self) -> None:
        """Rank 0 finished: wait for the others, and exit non-zero if any of them failed."""
        for local_rank, proc in self._procs.items():
            code = proc.wait()
            if code != 0 and not self._failed.is_set():
                self._failed.set()
                print(
                    f"[fabric] rank {self._global_rank(local_rank)} {describe_exit(code)}.", file=sys.stderr, flush=True
                )
                self.kill_workers()
        self._done.set()
        if self._failure_dir:
            import shutil

            shutil.rmtree(self._failure_dir, ignore_errors=True)
        if self._failed.is_set():
            os._exit(1)

    def _chain_excepthook(self) -> None:
        previous = sys.excepthook

        def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
            # Rank 0 failed: its workers would wait for it in a collective until the timeout. Often it
            # failed because a worker failed first (its collective lost the peer): name that one.
            previous(kind, value, tb)
            if not self._failed.is_set():
                self._failed.set()
                print(self._blame(kind.__name__), file=sys.stderr, flush=True)
            self.kill_workers()

        sys.excepthook = hook

    def _blame(self, exception: str) -> str:
        """The message naming the rank that failed first, when rank 0 raised ``exception`` (see ``first_failure``)."""
        me = self._global_rank(0)
        ends = [
            RankEnd(r, raised=name, time=stamp) for stamp, r, name in recorded_failures(self._failure_dir) if r != me
        ]
        dead = None if ends else self._first_dead_worker(wait=3.0)
        if dead is not None:
            ends.append(RankEnd(self._global_rank(dead[0]), exitcode=dead[1]))
        # Rank 0's own exception comes last: with nobody else failing it is the cause, otherwise it followed them.
        ends.append(RankEnd(me, raised=exception, consequence=True))
        first = first_failure(ends)
        if first is not None and first.rank != me and first.raised is not None:
            return f"[fabric] rank {first.rank} raised {first.raised}; rank {me} failed after it ({exception}). Stopping the job."
        if first is not None and first.rank != me:
            return (
                f"[fabric] rank {first.rank} {describe_exit(first.exitcode or 0)}; rank {me} failed after it "
                f"({exception}). Stopping the job."
            )
        return f"[fabric] rank {me} raised {exception}; stopping the other processes."
