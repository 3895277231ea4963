"""How many CPU cores this process may use, and what to give DataLoader workers and OpenMP from them."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else all cores)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def suggested_max_num_workers(local_world_size: int) -> int:
    """An upper bound for ``DataLoader(num_workers=...)`` with ``local_world_size`` processes on this machine.

    Each process gets an equal share of the cores, less one for the process itself (at least 1).
    """
    if local_world_size < 1:
        raise ValueError(f"`local_world_size` should be >= 1, got {local_world_size}.")
    return max(1, available_cpus() // local_world_size - 1)


def suggested_num_threads(num_processes: int = 1) -> int:
    """Threads per process (``OMP_NUM_THREADS``) so that ``num_processes`` processes share the cores."""
    if num_processes < 1:
        raise ValueError(f"`num_processes` should be >= 1, got {num_processes}.")
    return max(1, available_cpus() // num_processes)
