"""Seeding of every random number generator a training script touches.

The names and environment variables follow ``lightning.fabric.utilities.seed``: the seed is written
to both ``FABRIC_GLOBAL_SEED`` and Lightning's ``PL_GLOBAL_SEED`` (and the worker flag to
``FABRIC_SEED_WORKERS`` / ``PL_SEED_WORKERS``), and either name is read, so a ported script or a
library that reads Lightning's variables sees the same seed.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

SEED_ENV = "FABRIC_GLOBAL_SEED"
SEED_WORKERS_ENV = "FABRIC_SEED_WORKERS"
#: Lightning's names for the same two variables (read and written as well).
PL_SEED_ENV = "PL_GLOBAL_SEED"
PL_SEED_WORKERS_ENV = "PL_SEED_WORKERS"
min_seed_value, max_seed_value = 0, 2**32 - 1  # numpy's range

log = logging.getLogger(__name__)


def _env_seed() -> str | None:
    """The seed a previous ``seed_everything`` (here or in a parent process) recorded, if any."""
    value = os.environ.get(SEED_ENV)
    return value if value is not None else os.environ.get(PL_SEED_ENV)


def global_seed(default: int = 0) -> int:
    """The seed recorded in the environment (``FABRIC_GLOBAL_SEED`` or ``PL_GLOBAL_SEED``), else ``default``."""
    value = _env_seed()
    return int(value) if value is not None else default


def seed_workers_enabled() -> bool:
    """Whether ``seed_everything(..., workers=True)`` asked for per-worker seeding of dataloaders."""
    value = os.environ.get(SEED_WORKERS_ENV)
    if value is None:
        value = os.environ.get(PL_SEED_WORKERS_ENV, "0")
    return value.strip() not in ("", "0")


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed ``random``, NumPy (when installed) and torch; returns the seed used.

    Without ``seed`` the value of ``FABRIC_GLOBAL_SEED`` / ``PL_GLOBAL_SEED`` is used, or 0 with a
    warning. The seed is written to both variables so that processes started later (spawned ranks)
    use the same one. ``workers=True`` makes Fabric's dataloaders install a worker init function that
    gives every worker of every rank its own seed. ``verbose`` logs "Seed set to N" (rank zero only)
    through the ``logging`` module and enables the warning above.
    """
    import torch

    if seed is None:
        env_seed = _env_seed()
        if env_seed is None:
            seed = 0
            if verbose:
                from fabric_core.utilities.rank_zero import rank_zero_warn

                rank_zero_warn(f"No seed found, seed set to {seed} (pass a seed or set {SEED_ENV}).", stacklevel=3)
        else:
            try:
                seed = int(env_seed)
            except ValueError:
                raise ValueError(f"Invalid seed specified via {SEED_ENV}/{PL_SEED_ENV}: {env_seed!r}.") from None
    elif not isinstance(seed, int) or isinstance(seed, bool):
        seed = _as_int(seed)
    if not min_seed_value <= seed <= max_seed_value:
        raise ValueError(
            f"{seed} is not in bounds: seeds must be between {min_seed_value} and {max_seed_value} (numpy's range)."
        )
    if verbose:
        from fabric_core.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:
            log.info(f"Seed set to {seed}")
    os.environ[SEED_ENV] = os.environ[PL_SEED_ENV] = str(seed)
    os.environ[SEED_WORKERS_ENV] = os.environ[PL_SEED_WORKERS_ENV] = "1" if workers else "0"
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        pass
    else:
        np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def _as_int(seed: Any) -> int:
    """Cast a float (or numeric string) seed as Lightning does; a float out of range stays out of range."""
    try:
        return int(seed)
    except (TypeError, ValueError, OverflowError):
        if isinstance(seed, float):  # inf: report it like any other out-of-range value
            raise ValueError(
                f"{seed} is not in bounds: seeds must be between {min_seed_value} and {max_seed_value}."
            ) from None
        raise ValueError(f"seed must be an integer, got {seed!r}.") from None


def reset_seed() -> None:
    """Seed again with what ``seed_everything`` last recorded in the environment; a no-op if it never ran."""
    seed = _env_seed()
    if seed is None:
        return
    seed_everything(int(seed), workers=seed_workers_enabled(), verbose=False)


def worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Give each dataloader worker of each rank a distinct, reproducible seed.

    The base comes from the seed torch gave this worker (drawn from the main process's generator, so
    it differs from epoch to epoch yet is reproducible after ``seed_everything``); worker id and
    global rank are mixed in with NumPy's ``SeedSequence`` so no two workers of a job share a stream.
    """
    import torch

    if rank is None:
        from fabric_core.utilities.rank_zero import rank_zero_only

        rank = rank_zero_only.rank
    base_seed = torch.initial_seed() - worker_id
    try:
        import numpy as np
    except ImportError:
        mixed = hash((base_seed, worker_id, rank)) & (2**63 - 1)
        torch.manual_seed(mixed)
        random.seed(mixed)
        return
    sequence = np.random.SeedSequence([base_seed, worker_id, rank])
    torch_seed, stdlib_high, stdlib_low, _ = sequence.generate_state(4, dtype=np.uint64).tolist()
    torch.manual_seed(torch_seed)
    random.seed((stdlib_high << 64) | stdlib_low)
    np.random.seed(sequence.generate_state(4))


#: Lightning's name for ``worker_init_function``.
pl_worker_init_function = worker_init_function
