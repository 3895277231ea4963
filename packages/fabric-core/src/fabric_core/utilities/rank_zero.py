"""Run a function, log or warn on global rank 0 only (names as in ``lightning.fabric.utilities.rank_zero``).

The rank is read when the decorated function is called: from the initialised ``torch.distributed``
process group, else from the launcher's environment (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``,
``JSM_NAMESPACE_RANK``), else 0. Fabric therefore never has to record it anywhere; a script may
still pin it by assigning ``rank_zero_only.rank = N``, as with Lightning.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _current_rank() -> int:
    dist = sys.modules.get("torch.distributed")  # never import torch.distributed just to ask
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    for key in _RANK_VARIABLES:
        value = os.environ.get(key)
        if value is not None:
            return int(value)
    return 0


class _RankZeroOnly:
    """Decorator: the wrapped function runs on global rank 0 and returns ``default`` elsewhere."""

    def __init__(self) -> None:
        self._pinned: int | None = None

    @property
    def rank(self) -> int:
        """The global rank this process has (pinned by assignment, else detected at each call)."""
        return self._pinned if self._pinned is not None else _current_rank()

    @rank.setter
    def rank(self, value: int | None) -> None:
        self._pinned = value

    def __call__(self, fn: Callable[..., T], default: T | None = None) -> Callable[..., T | None]:
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> T | None:
            if self.rank == 0:
                return fn(*args, **kwargs)
            return default

        return wrapped


#: ``@rank_zero_only`` or ``rank_zero_only(fn, default=...)``; ``rank_zero_only.rank`` is the rank.
rank_zero_only = _RankZeroOnly()


def rank_prefixed_message(message: str, rank: int | None) -> str:
    """``"[rank: N] message"``, or the message unchanged when the rank is unknown."""
    return f"[rank: {rank}] {message}" if rank is not None else message


def rank_zero_debug(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.debug`` on rank 0 only (logger ``fabric_core.utilities.rank_zero``)."""
    if rank_zero_only.rank == 0:
        log.debug(*args, stacklevel=stacklevel, **kwargs)


def rank_zero_info(*args: Any, stacklevel: int = 4, **kwargs: Any) -> None:
    """``logging.info`` on rank 0 only (logger ``fabric_core.utilities.rank_zero``)."""
    if rank_zero_only.rank == 0:
        log.info(*args, stacklevel=stacklevel, **kwargs)


def rank_zero_warn(message: str | Warning, stacklevel: int = 4, **kwargs: Any) -> None:
    """``warnings.warn`` on rank 0 only, so a job warns once instead of once per process."""
    if rank_zero_only.rank == 0:
        warnings.warn(message, stacklevel=stacklevel, **kwargs)


def rank_zero_deprecation(message: str | Warning, stacklevel: int = 5, **kwargs: Any) -> None:
    """A ``DeprecationWarning`` on rank 0 only."""
    kwargs.setdefault("category", DeprecationWarning)
    rank_zero_warn(message, stacklevel=stacklevel, **kwargs)


def rank_zero_print(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if rank_zero_only.rank == 0:
        print(*args, **kwargs)
