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
    the batches moved to ``device`` (``None`` leaves them where they are; so does a CPU device, as
    batches on a CPU-only run are there already).
    """

    def __init__(self, dataloader: DataLoader, device: torch.device | None = None, strategy: Any = None) -> None:
        self.__dict__.update(
            {
                "_dataloader": dataloader,
                "_device": device,
                "_strategy": strategy,
                "_num_iter_calls": 0,
                "_batches_yielded": 0,
                "_epoch_start_rng": None,
                "_resume": None,
            }
        )

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
        loader = self._dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        candidates = (getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None))
        seen: list[Any] = []
        for sampler in candidates:  # the loader's sampler is usually also its batch sampler's: once each
            if sampler is None or any(sampler is s for s in seen):
                continue
            seen.append(sampler)
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self._num_iter_calls)

    def position(self) -> dict[str, Any]:
        """Where iteration stands: the epoch being iterated, batches consumed, the RNG state it began with."""
        epoch = max(self._num_iter_calls - 1, 0)
        return {"epoch": epoch, "batches": self._batches_yielded, "rng": self._epoch_start_rng}

    def resume_from(self, position: dict[str, Any]) -> None:
        """Make the next iteration continue the epoch described by ``position`` (from ``position()``)."""
        self.__dict__["_resume"] = position

    def __iter__(self) -> Iterator[Any]:
        resume, skip = self._resume, 0
        if resume is not None:
            self.__dict__.update({"_resume": None, "_num_iter_calls": resume["epoch"]})
            skip = resume["batches"]
        self._set_epoch()
        self.__dict__["_num_iter_calls"] += 1
        self.__dict__["_batches_yielded"] = 0
        current_rng = None
        if resume is not None and resume["rng"] is not None:
            current_rng = torch.get_rng_state()
            torch.set_rng_state(resume["rng"])  # the loader draws its shuffle seed as it did then
        self.__dict__["_epoch_start_rng"] = torch.get_rng_state()
        strategy, device = self._strategy, self._device
        source = strategy.process_dataloader(self._dataloader, device) if strategy is not None else None
        iterator = iter(self._dataloader if source is None else source)
        for _ in range(skip):
            next(iterator, None)
        if current_rng is not None:
            torch.set_rng_state(current_rng)
        self.__dict__["_batches_yielded"] = skip
        if device is None or source is not None or device.type == "cpu":
            move = None  # CPU batches are where they belong already: no per-batch call
        elif strategy is not None:
            move = strategy.batch_to_device
        else:  # built without a strategy (as Lightning's wrapper can be): plain device placement
            from fabric_core.utilities.apply_func import move_to_device as move
        state = self.__dict__
        for batch in iterator:
            state["_batches_yielded"] += 1
            yield batch if move is None else move(batch, device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_dataloader"], name)

    def __repr__(self) -> str:
        return f"_FabricDataLoader({self._dataloader!r}, device={self._device})"
