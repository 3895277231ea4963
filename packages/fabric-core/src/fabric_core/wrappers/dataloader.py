"""``_FabricDataLoader``: moves batches to the device and advances the sampler's epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class _FabricDataLoader:
    """What ``fabric.setup_dataloaders`` returns.

    Each time it is iterated it calls ``set_epoch`` on a sampler that has one (so that a
    ``DistributedSampler`` shuffles differently every epoch, identically on every rank), then yields
    the batches moved to ``device`` (``None`` leaves them where they are).
    """

    def __init__(self, dataloader: DataLoader, device: torch.device | None = None, strategy: Any = None) -> None:
        self.__dict__.update({"_dataloader": dataloader, "_device": device, "_strategy": strategy, "_num_iter_calls": 0})

    @property
    def dataloader(self) -> DataLoader:
        """The loader this wraps."""
        return self._dataloader

    @property
    def device(self) -> torch.device | None:
        return self._device

    def __len__(self) -> int:
        return len(self._dataloader)

    def _set_epoch(self) -> None:
        for sampler in (getattr(self._dataloader, "sampler", None), getattr(self._dataloader, "batch_sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self._num_iter_calls)
            inner = getattr(sampler, "sampler", None)  # a BatchSampler around a DistributedSampler
            set_epoch = getattr(inner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self._num_iter_calls)

    def __iter__(self) -> Iterator[Any]:
        self._set_epoch()
        self.__dict__["_num_iter_calls"] += 1
        if self._device is None:
            yield from self._dataloader
            return
        move = self._strategy.batch_to_device
        device = self._device
        for batch in self._dataloader:
            yield move(batch, device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_dataloader"], name)

    def __repr__(self) -> str:
        return f"_FabricDataLoader({self._dataloader!r}, device={self._device})"
