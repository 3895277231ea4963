"""Sharding a custom sampler (or batch sampler) across processes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DistributedSampler


class _IndexList:
    """A dataset-shaped view of what a sampler yields, so DistributedSampler can shard it."""

    def __init__(self, sampler: Iterable[Any]) -> None:
        self.sampler = sampler
        self.items: list[Any] = []

    def refresh(self) -> None:
        self.items = list(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


class DistributedSamplerWrapper(DistributedSampler):
    """Gives each rank its own share of what the user's sampler yields, in the sampler's order.

    The user's sampler runs in full on every rank each epoch (so a seeded custom sampler gives the
    same sequence everywhere) and rank ``r`` keeps items ``r, r + world, r + 2 world ...``.
    """

    def __init__(
        self,
        sampler: Iterable[Any],
        num_replicas: int,
        rank: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            _IndexList(sampler),  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    @property
    def sampler(self) -> Iterable[Any]:
        return self.dataset.sampler  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        inner = getattr(self.dataset.sampler, "set_epoch", None)  # type: ignore[attr-defined]
        if callable(inner):
            inner(epoch)

    def __iter__(self) -> Iterator[Any]:
        view: _IndexList = self.dataset  # type: ignore[assignment]
        view.refresh()
        return (view.items[i] for i in super().__iter__())
