"""Seeding of every random number generator a training script touches."""

from __future__ import annotations

import os
import random
import warnings

SEED_ENV = "FABRIC_GLOBAL_SEED"
SEED_WORKERS_ENV = "FABRIC_SEED_WORKERS"
_MIN_SEED, _MAX_SEED = 0, 2**32 - 1


def seed_everything(seed: int | None = None, workers: bool | None = None) -> int:
    """Seed ``random``, NumPy (when installed) and torch; returns the seed used.

    Without ``seed`` the value of ``FABRIC_GLOBAL_SEED`` is used, or 0 with a warning. The seed is
    written to that variable so that processes started later (spawned ranks) use the same one.
    ``workers=True`` makes Fabric's dataloaders give every worker of every rank its own seed.
    """
    import torch

    if seed is None:
        env_seed = os.environ.get(SEED_ENV)
        if env_seed is None:
            warnings.warn("No seed given and FABRIC_GLOBAL_SEED is not set: seeding with 0.", stacklevel=2)
            seed = 0
        else:
            try:
                seed = int(env_seed)
            except ValueError as err:
                raise ValueError(f"FABRIC_GLOBAL_SEED={env_seed!r} is not an integer.") from err
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
    if not _MIN_SEED <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be between {_MIN_SEED} and {_MAX_SEED}, got {seed}.")
    os.environ[SEED_ENV] = str(seed)
    if workers is not None:
        os.environ[SEED_WORKERS_ENV] = "1" if workers else "0"
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)
    return seed


def worker_init_function(worker_id: int, rank: int = 0) -> None:
    """Give each dataloader worker of each rank a distinct, reproducible seed."""
    import torch

    base = int(os.environ.get(SEED_ENV, 0))
    seed_sequence = [base, worker_id, rank]
    import numpy as np

    ss = np.random.SeedSequence(seed_sequence)
    torch_seed, stdlib_seed, np_seed = ss.generate_state(3, dtype=np.uint64).tolist()
    torch.manual_seed(torch_seed)
    random.seed(stdlib_seed)
    np.random.seed(np_seed % 2**32)
