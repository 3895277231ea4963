"""XLA data loading through the strategy's ``process_dataloader``: torch_xla's background loader.

Batches are uploaded ahead of use by torch_xla's ``ParallelLoader`` (what ``MpDeviceLoader`` wraps),
and each batch ends the pending lazy graph, so an evaluation loop without optimizer steps runs one
small graph per batch instead of one graph that grows with the epoch.
"""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from torch.utils.data import DataLoader, Dataset, TensorDataset
from xla_helpers import requires_xla

pytestmark = requires_xla()


def _executions() -> int:
    import torch_xla.debug.metrics as met

    data = met.metric_data("ExecuteTime")
    return int(data[0]) if data else 0


def _evaluate(fabric: Fabric, batches: int) -> tuple[int, int]:
    """Sum a loss over an epoch without any optimizer step: (graphs executed, size of the graph left pending)."""
    import torch_xla

    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.randn(8 * batches, 6)), batch_size=8))
    weight = torch.randn(6, 1, device=fabric.device)
    torch_xla.sync()
    before = _executions()
    total = torch.zeros((), device=fabric.device)
    for (x,) in loader:
        assert x.device.type == "xla"
        total = total + (x @ weight).pow(2).sum()
    pending = torch_xla._XLAC._get_xla_tensors_text([total]).count("\n")
    return _executions() - before, pending


def test_each_batch_ends_the_pending_graph(fabric):
    short_executed, short_pending = _evaluate(fabric, batches=2)
    long_executed, long_pending = _evaluate(fabric, batches=6)
    assert short_executed >= 2 and long_executed >= 6  # one graph per batch, run as the loop goes
    assert long_pending == short_pending  # what is left does not grow with the number of batches


def test_batches_arrive_in_the_loaders_order_with_the_same_shuffle(fabric):
    data = TensorDataset(torch.arange(40.0).reshape(20, 2))
    torch.manual_seed(7)
    expected = [b[0].tolist() for b in DataLoader(data, batch_size=4, shuffle=True)]
    loader = fabric.setup_dataloaders(DataLoader(data, batch_size=4, shuffle=True), use_distributed_sampler=False)
    torch.manual_seed(7)
    got = [b[0].cpu().tolist() for b in loader]
    assert got == expected


def test_without_moving_batches_the_loader_is_left_alone(fabric):
    loader = fabric.setup_dataloaders(DataLoader(torch.ones(4, 2), batch_size=2), move_to_device=False)
    assert [b.device.type for b in loader] == ["cpu", "cpu"]


class _BrokenAt(Dataset):
    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == self.bad:
            raise RuntimeError(f"sample {index} cannot be read")
        return torch.full((2,), float(index))


def test_an_error_in_the_dataset_reaches_the_training_loop(fabric):
    # torch_xla's loader thread would end the epoch early and silently; the error must surface instead.
    loader = fabric.setup_dataloaders(DataLoader(_BrokenAt(bad=9), batch_size=4))
    seen = []
    with pytest.raises(RuntimeError, match="sample 9 cannot be read"):
        for batch in loader:
            seen.append(batch.shape[0])
    assert seen == [4, 4]


def test_leaving_an_epoch_early_stops_the_upload_threads(fabric):
    import threading

    loader = fabric.setup_dataloaders(DataLoader(torch.randn(400, 6), batch_size=4))
    before = threading.active_count()
    for index, _ in enumerate(loader):
        if index == 2:
            break
    assert threading.active_count() == before  # the loop's end closed torch_xla's loader and joined its threads
    assert sum(1 for _ in loader) == 100  # the next epoch starts afresh, whole
