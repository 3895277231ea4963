"""fabric.split_between_processes: contiguous shares, the first ranks one longer, optional padding."""

from __future__ import annotations

import pytest
import torch
from convenience_jobs import job, part
from fabric_core import Fabric
from fabric_core.utilities.split import split_items


@pytest.mark.parametrize(
    ("length", "world", "sizes"), [(7, 2, [4, 3]), (7, 3, [3, 2, 2]), (2, 3, [1, 1, 0]), (6, 3, [2, 2, 2])]
)
def test_shares_are_contiguous_and_cover_everything(length: int, world: int, sizes: list[int]) -> None:
    items = list(range(length))
    shares = [split_items(items, world, rank) for rank in range(world)]
    assert [len(s) for s in shares] == sizes
    assert [i for s in shares for i in s] == items
    tensor_shares = [split_items(torch.arange(length), world, rank) for rank in range(world)]
    assert torch.equal(torch.cat(tensor_shares), torch.arange(length))


def test_padding_repeats_the_last_item() -> None:
    assert split_items(list("abcde"), 2, 1, apply_padding=True) == ["d", "e", "e"]
    assert split_items(("a", "b"), 3, 2, apply_padding=True) == ("b",)
    padded = split_items(torch.arange(10).view(5, 2), 3, 2, apply_padding=True)
    assert padded.tolist() == [[8, 9], [8, 9]]


def test_dicts_are_split_value_by_value_and_must_agree_in_length() -> None:
    share = split_items({"ids": [1, 2, 3], "x": torch.tensor([4, 5, 6])}, 2, 0)
    assert share["ids"] == [1, 2] and share["x"].tolist() == [4, 5]
    with pytest.raises(ValueError, match="same length"):
        split_items({"a": [1, 2], "b": [1]}, 2, 0)
    with pytest.raises(TypeError, match="lists, tuples, tensors"):
        split_items({"a": 3}, 2, 0)


def test_one_process_gets_everything() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    with fabric.split_between_processes([1, 2, 3], apply_padding=True) as mine:
        assert mine == [1, 2, 3]


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("devices", [2, 3])
def test_in_real_processes(devices: int, preloaded_python) -> None:
    results = job("ddp", devices, preloaded_python)
    shares = [part(results, rank, "split") for rank in range(devices)]
    assert [i for s in shares for i in s["plain"]] == list(range(7))
    assert [len(s["plain"]) for s in shares] == ([4, 3] if devices == 2 else [3, 2, 2])
    assert len({len(s["padded"]) for s in shares}) == 1
    assert shares[0]["gathered"] == [i for s in shares for i in s["padded"]]
    assert [i for s in shares for i in s["dict"]["a"]] == list(range(7))
    assert [i for s in shares for i in s["dict"]["t"]] == [2 * i for i in range(7)]
