"""Starting the other local ranks of a script as forks of rank 0 at ``fabric.launch()``.

A fresh interpreter per rank re-imports torch (1.5 s or more per process, the largest part of a
job's start-up, and paid one after the other, since rank 0 has imported it before it starts the
others). A fork shares what rank 0 has loaded. The forked worker is a copy of rank 0 at the moment
of ``launch()``: it returns from ``launch()`` as its own rank and runs the rest of the script, as a
re-run worker does once it reaches ``launch()``.

Forking is only safe without other threads (a fork keeps only the calling thread; locks held by
others stay locked forever; GNU OpenMP's pool, once torch ran a parallel operation, hangs the child),
OpenBLAS's own threads excepted, and before CUDA is initialised. ``fork_refusal`` names what stands
in the way; the launcher then starts fresh interpreters as before. ``FABRIC_RELAUNCH=exec`` asks for
fresh interpreters always (for scripts that need their code before ``launch()`` to run once per rank).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

RELAUNCH_ENV = "FABRIC_RELAUNCH"
_OPENBLAS_THREAD_COUNT = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)
_PORT_BYTES = 8  # the rendezvous port, as fixed-width decimal: one atomic pipe message per worker


def fork_refusal() -> str | None:
    """Why this process cannot fork its workers (``None``: it can)."""
    choice = os.environ.get(RELAUNCH_ENV, "fork")
    if choice not in ("fork", "exec"):
        raise ValueError(f"{RELAUNCH_ENV}={choice!r} is not valid; choose 'fork' (the default) or 'exec'.")
    if choice == "exec":
        return f"{RELAUNCH_ENV}=exec"
    if not sys.platform.startswith("linux"):
        return f"fork is not used on {sys.platform}"
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return "the thread count is unknown"
    expected = 1 + _openblas_servers()
    if threads != expected:
        return f"{threads} threads are running (safe to fork: {expected})"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised"
    return None


def _openblas_servers() -> int:
    """The server threads OpenBLAS started (numpy's starts them when torch imports numpy).

    They are the only threads a fresh ``import torch`` leaves, and OpenBLAS stops them around a fork
    itself (``openblas_fork_handler``). GNU OpenMP's threads, which appear once torch has run a
    parallel operation, are not fork-safe: a forked child hangs in its next parallel region.
    """
    import ctypes

    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip() if line.count(" ") >= 5 else ""
                if "openblas" in os.path.basename(path).lower():
                    paths.add(path)
    except OSError:
        return 0
    servers = 0
    for path in paths:
        try:
            library = ctypes.CDLL(path)  # already loaded: the same handle, nothing runs
        except OSError:
            continue
        for symbol in _OPENBLAS_THREAD_COUNT:
            count = getattr(library, symbol, None)
            if count is not None:
                servers += max(0, int(count()) - 1)  # the calling thread is one of OpenBLAS's threads
                break
    return servers


class ForkedWorker:
    """A forked worker process, with the part of ``subprocess.Popen``'s interface the launcher uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()  # one waitpid at a time (the watchdog thread polls too)

    def _reap(self, flags: int) -> None:
        if self.returncode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, flags)
        except ChildProcessError:  # reaped by someone else: its status is lost
            self.returncode = 255
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            with self._lock:
                self._reap(0)
            assert self.returncode is not None
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(min(0.01, left))
        assert self.returncode is not None
        return self.returncode

    def _signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def fork_workers(strategy: Any, envs: dict[int, dict[str, str]], bind_store: bool) -> dict[int, ForkedWorker] | None:
    """Fork one worker per entry of ``envs`` (local rank -> its variables).

    Returns the workers in rank 0, ``None`` in a worker, which then continues as its local rank. With
    ``bind_store``, rank 0 binds the rendezvous store on a free port after forking (its server
    thread must not exist at the fork) and sends each worker the port through a pipe.
    """
    import random

    from fabric_core.launchers.subprocess_script import die_with_parent

    _preload_for_first_step()
    read_end, write_end = os.pipe() if bind_store else (-1, -1)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or buffered output would be written by both processes
    random_state = random.getstate()  # CPython reseeds `random` in a fork child: keep rank 0's stream, as numpy's
    workers: dict[int, ForkedWorker] = {}
    # What rank 0 holds at the fork (torch's modules above all) is moved out of the collector's sight in the
    # workers, the pattern CPython's gc.freeze documents for forking: their collections, and the one at exit,
    # then do not write to (and so copy) every page those objects live on. Measured on a 2-process CPU job: the
    # worker's private memory after a collection 80 -> 14 MB, the job's end 1.8 -> 1.2 s. Rank 0 is unfrozen,
    # unless the script had frozen objects itself (gc.unfreeze would undo that too).
    unfreeze = gc.get_freeze_count() == 0
    gc.freeze()
    for local_rank, env in envs.items():
        try:
            pid = os.fork()
        except BaseException:
            if unfreeze:
                gc.unfreeze()
            raise
        if pid == 0:  # a worker: it stays frozen
            die_with_parent()
            random.setstate(random_state)
            _become_worker(strategy, local_rank, env, read_end, write_end)
            return None
        workers[local_rank] = ForkedWorker(pid)
    if unfreeze:
        gc.unfreeze()
    if bind_store:
        import torch.distributed as dist

        os.close(read_end)
        env = strategy.cluster_environment
        try:
            store = dist.TCPStore(
                env.main_address,
                0,
                strategy.world_size,
                is_master=True,
                timeout=strategy.timeout,
                wait_for_workers=False,
            )
            strategy._store = store
            message = str(store.port).rjust(_PORT_BYTES).encode()
            for _ in workers:
                os.write(write_end, message)
        finally:
            os.close(write_end)  # the workers read end-of-file if binding failed, and exit
    return workers


def _preload_for_first_step() -> None:
    """Import, once for all ranks, what every rank imports before its first step anyway.

    Creating any torch optimizer imports ``torch._dynamo`` (about 800 modules, ~1 s): imported here,
    the forks share it instead of importing it each, side by side on the same cores. It starts no thread.
    """
    try:
        import torch._dynamo  # noqa: F401
    except ImportError:  # pragma: no cover - torch builds without dynamo
        pass


def _become_worker(strategy: Any, local_rank: int, env: dict[str, str], read_end: int, write_end: int) -> None:
    """In a forked worker: take the rank's variables, and the port rank 0 bound, before the script goes on."""
    if read_end >= 0:
        os.close(write_end)
        message = os.read(read_end, _PORT_BYTES)
        os.close(read_end)
        if len(message) != _PORT_BYTES:
            os._exit(1)  # rank 0 could not bind the store; it reports why
        env = {**env, "MASTER_PORT": message.decode().strip()}
        import torch.distributed as dist

        strategy._store = dist.TCPStore(
            env["MASTER_ADDR"],
            int(env["MASTER_PORT"]),
            strategy.world_size,
            is_master=False,
            timeout=strategy.timeout,
        )
    os.environ.update(env)
    strategy.set_local_rank(local_rank)
