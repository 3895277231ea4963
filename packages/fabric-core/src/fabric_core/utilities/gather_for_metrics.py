"""Gathering per-sample outputs for metrics, without the samples a ``DistributedSampler`` padded in.

A ``DistributedSampler`` over ``L`` samples and ``W`` processes gives every rank ``ceil(L / W)``
samples: when ``W`` does not divide ``L`` it repeats the first ``pad = W * ceil(L / W) - L`` indices
at the end. Those repeats are the *last* sample of the epoch on ranks ``W - pad .. W - 1`` (the
last batch, with a batch sampler). Dropping them from the last batch's gathered outputs makes a
metric over the whole dataset exact. Which batch is the last one comes from the Fabric dataloader
being iterated (its length and position); the padding from its sampler.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DistributedSampler

from fabric_core.utilities.apply_func import apply_to_tensors

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy


def padded_ranks(dataloader: Any, world_size: int) -> tuple[set[int], bool]:
    """The ranks whose current batch ends with padding, and whether a whole batch is the padding.

    Empty unless ``dataloader`` (a Fabric dataloader) has just yielded its last batch of the epoch
    and its distributed sampler padded.
    """
    position = getattr(dataloader, "position", None)
    if not callable(position):
        raise TypeError(
            "gather_for_metrics(dataloader=...) takes the loader returned by fabric.setup_dataloaders "
            f"that the batch came from, got {type(dataloader).__name__}."
        )
    try:
        length = len(dataloader)
    except TypeError:
        return set(), False  # an iterable dataset: not sharded by a sampler, nothing padded
    if int(position()["batches"]) != length:
        return set(), False
    sampler, whole_batches = _distributed_sampler(dataloader)
    if sampler is None or sampler.drop_last:
        return set(), False
    pad = sampler.total_size - len(sampler.dataset)  # type: ignore[arg-type]
    return set(range(world_size - pad, world_size)), whole_batches


def _distributed_sampler(dataloader: Any) -> tuple[DistributedSampler | None, bool]:
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    if isinstance(batch_sampler, DistributedSampler):  # a custom batch sampler, sharded batch by batch
        return batch_sampler, True
    sampler = getattr(dataloader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        return sampler, False
    inner = getattr(batch_sampler, "sampler", None)
    if isinstance(inner, DistributedSampler):
        return inner, False
    return None, False


def gather_for_metrics(strategy: Strategy, data: Any, padded: Collection[int] = (), whole_batches: bool = False) -> Any:
    """Gather every tensor in ``data`` across processes and concatenate along dim 0.

    Chunks may differ in length between ranks. Tensors of ranks in ``padded`` lose their last row
    (their whole chunk when ``whole_batches``). 0-d tensors become a 1-d tensor of one value per rank.
    """
    world_size = strategy.world_size

    def gather(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 0:
            return strategy.all_gather(tensor)
        chunks = _gather_uneven(strategy, tensor, world_size)
        kept = []
        for rank, chunk in enumerate(chunks):
            if rank in padded:
                chunk = chunk[:0] if whole_batches else chunk[:-1]
            kept.append(chunk)
        return torch.cat(kept)

    return apply_to_tensors(data, gather)


def _gather_uneven(strategy: Strategy, tensor: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """Each rank's ``tensor``, also when their first dimensions differ (padded for the collective)."""
    sizes = strategy.all_gather(torch.tensor(tensor.shape[0], device=tensor.device)).tolist()
    longest = max(sizes)
    if longest != tensor.shape[0]:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, padding])
    gathered = strategy.all_gather(tensor)
    return [gathered[rank, : sizes[rank]] for rank in range(world_size)]
