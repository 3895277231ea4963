"""Giving each process its contiguous share of a list, tuple, tensor or dict of them (inference work)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def share_bounds(length: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous share: the first ``length % world_size`` ranks get one more."""
    base, extra = divmod(length, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def split_items(items: Any, world_size: int, rank: int, apply_padding: bool = False) -> Any:
    """This rank's share of ``items`` (a list, tuple, tensor, or a dict whose values are those).

    With ``apply_padding`` every rank gets ``ceil(len / world_size)`` items: shares that are shorter
    are filled with copies of the last item of ``items``, so outputs can be gathered; drop them after.
    """
    if isinstance(items, Mapping):
        lengths = {key: _length(value, f"the value of {key!r}") for key, value in items.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"split_between_processes needs every value of a dict to have the same length, got {lengths}."
            )
        mapping_type: Any = type(items)
        return mapping_type({key: split_items(value, world_size, rank, apply_padding) for key, value in items.items()})
    length = _length(items, "items")
    start, stop = share_bounds(length, world_size, rank)
    share = items[start:stop]
    if not apply_padding or length == 0:
        return share
    missing = -(-length // world_size) - (stop - start)
    if missing == 0:
        return share
    if isinstance(items, torch.Tensor):
        return torch.cat([share, items[-1:].expand(missing, *items.shape[1:])])
    return share + type(items)([items[-1]] * missing)


def _length(value: Any, what: str) -> int:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            raise TypeError(f"split_between_processes cannot split a 0-d tensor ({what}).")
        return value.shape[0]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return len(value)
    raise TypeError(
        f"split_between_processes splits lists, tuples, tensors, or dicts of them; {what} is a {type(value).__name__}."
    )
