"""Helpers that act on global rank 0 only."""

from __future__ import annotations

import warnings
from typing import Any


def rank_zero_warn(message: str, rank: int, category: type[Warning] = UserWarning, stacklevel: int = 3) -> None:
    """Warn once per job instead of once per process."""
    if rank == 0:
        warnings.warn(message, category, stacklevel=stacklevel)


def rank_zero_print(rank: int, *args: Any, **kwargs: Any) -> None:
    if rank == 0:
        print(*args, **kwargs)
