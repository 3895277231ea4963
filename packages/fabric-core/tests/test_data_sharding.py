"""Distributed sampling decided per rank, checked without processes (the strategy's sampler kwargs)."""

from __future__ import annotations

import pytest
import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.utilities.data import prepare_dataloader
from fabric_core.utilities.samplers import DistributedSamplerWrapper
from fabric_core.wrappers.dataloader import _FabricDataLoader
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    Sampler,
    SequentialSampler,
    TensorDataset,
)


class FakeRank:
    """Stands in for a 2-process strategy: only what prepare_dataloader reads."""

    def __init__(self, rank: int, world: int = 2) -> None:
        self.global_rank = rank
        self.distributed_sampler_kwargs = {"num_replicas": world, "rank": rank}


DATA = TensorDataset(torch.arange(10))


def indices(loader) -> list[int]:
    return [int(i) for (batch,) in loader for i in batch]


@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_get_disjoint_shards_covering_the_data(shuffle):
    shards = [indices(prepare_dataloader(DataLoader(DATA, batch_size=2, shuffle=shuffle), FakeRank(r))) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == list(range(10))
    loader = prepare_dataloader(DataLoader(DATA, batch_size=2, shuffle=shuffle), FakeRank(0))
    assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.shuffle is shuffle


def test_shuffle_differs_per_epoch_but_is_shared_by_ranks():
    def epochs(rank):
        wrapper = _FabricDataLoader(prepare_dataloader(DataLoader(DATA, batch_size=10, shuffle=True), FakeRank(rank)))
        return [indices(wrapper) for _ in range(2)]

    rank0, rank1 = epochs(0), epochs(1)
    assert rank0[0] != rank0[1]  # set_epoch changed the order
    for epoch in range(2):
        assert sorted(rank0[epoch] + rank1[epoch]) == list(range(10))


class EvenFirst(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(list(range(0, self.n, 2)) + list(range(1, self.n, 2)))

    def __len__(self) -> int:
        return self.n


def test_custom_sampler_is_wrapped_keeping_its_order():
    shards = [indices(prepare_dataloader(DataLoader(DATA, sampler=EvenFirst(10)), FakeRank(r))) for r in (0, 1)]
    assert shards[0] == [0, 4, 8, 3, 7] and shards[1] == [2, 6, 1, 5, 9]


def test_custom_batch_sampler_shards_whole_batches():
    class Pairs(BatchSampler):
        pass

    batch_sampler = Pairs(SequentialSampler(DATA), batch_size=2, drop_last=False)
    loader = prepare_dataloader(DataLoader(DATA, batch_sampler=batch_sampler), FakeRank(1))
    assert isinstance(loader.batch_sampler, DistributedSamplerWrapper)
    # 5 batches over 2 ranks: padded to 3 each (a rank never waits for a missing batch)
    assert indices(loader) == [2, 3, 6, 7, 0, 1]


def test_iterable_dataset_is_left_alone():
    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(4))

    loader = DataLoader(Stream())
    assert prepare_dataloader(loader, FakeRank(1)) is loader


def test_opting_out_keeps_the_loader():
    loader = DataLoader(DATA)
    assert prepare_dataloader(loader, FakeRank(1), replace_sampler=False) is loader


def test_dataloader_subclass_is_rebuilt_with_its_own_arguments():
    class MyLoader(DataLoader):
        def __init__(self, dataset, tag, **kwargs):
            self.tag = tag
            super().__init__(dataset, **kwargs)

    loader = prepare_dataloader(MyLoader(DATA, tag="mine", batch_size=5), FakeRank(1))
    assert type(loader) is MyLoader and loader.tag == "mine"
    assert indices(loader) == [1, 3, 5, 7, 9]


def test_dataloader_subclass_that_cannot_be_rebuilt_says_how_to_fix_it():
    class Opaque(DataLoader):
        def __init__(self, data, secret):
            super().__init__(data)

    with pytest.raises(MisconfigurationError, match="use_distributed_sampler=False"):
        prepare_dataloader(Opaque(DATA, secret=1), FakeRank(0))
