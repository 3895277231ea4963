"""Batches uploaded to an XLA device in the background, through torch_xla's ``ParallelLoader``.

It is what ``MpDeviceLoader`` wraps: worker threads read the user's DataLoader and copy batches to
the device ahead of use, and every batch ends the pending lazy graph (``torch_xla.sync()``), so a loop
without optimizer steps (evaluation) runs one small graph per batch instead of growing one graph over
the whole epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


class _Reading:
    """The user's loader, read in torch_xla's worker thread, keeping the error that ended it.

    torch_xla's loader thread stops silently when the loader raises (the epoch would just end
    early); the error is kept here and raised again in the training loop.
    """

    def __init__(self, dataloader: Iterable[Any]) -> None:
        self.dataloader = dataloader
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.dataloader
        except BaseException as err:  # raised again by device_batches, in the caller's thread
            self.error = err


def device_batches(dataloader: Iterable[Any], device: torch.device) -> Iterator[Any]:
    """One pass over ``dataloader`` with every batch already on ``device``; the upload threads stop with it."""
    from torch_xla.distributed.parallel_loader import ParallelLoader

    reading = _Reading(dataloader)
    loader = ParallelLoader(reading, [device])
    try:
        yield from loader.per_device_loader(device)
    finally:
        loader.close()
    if reading.error is not None:
        raise reading.error
