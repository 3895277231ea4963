"""CUDA_VISIBLE_DEVICES rules, as the CUDA runtime applies them to the devices NVML lists."""

from __future__ import annotations

import pytest
from fabric_cuda.visible_devices import count_visible_devices, names_mig_devices, visible_device_entries

UUIDS = ["GPU-aaaa1111-0000", "GPU-aaaa2222-0000", "GPU-bbbb3333-0000", "GPU-cccc4444-0000"]


def count(value: str | None) -> int:
    return count_visible_devices(visible_device_entries(value), UUIDS)


def test_unset_means_every_device() -> None:
    assert visible_device_entries(None) is None
    assert count(None) == 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 1),
        ("0,2", 2),
        ("3,2,1,0", 4),
        (" 1 , 2 ", 2),
        ("", 0),  # empty hides every GPU
        ("1,7,0", 1),  # the list ends at the first index that names no device
        ("0,-1,1", 1),  # a negative index ends it too
        ("-1", 0),
        ("2,x,0", 1),
        ("1gpu", 1),  # the runtime reads the leading number
        ("0,0", 0),  # a repeated device invalidates the whole list
        ("1,2,1", 0),
    ],
)
def test_ordinals(value: str, expected: int) -> None:
    assert count(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("GPU-bbbb3333-0000", 1),
        ("GPU-bbbb", 1),  # a unique prefix is enough
        ("GPU-aaaa2,GPU-cccc", 2),
        ("GPU-aaaa", 0),  # ambiguous prefix names no device
        ("GPU-ffff", 0),
        ("GPU-cccc,GPU-ffff,GPU-bbbb", 1),
        ("GPU-aaaa1,0", 0),  # the same device by UUID and by index
        ("GPU-bbbb,1", 2),
    ],
)
def test_uuids(value: str, expected: int) -> None:
    assert count(value) == expected


def test_mig_entries_are_recognised() -> None:
    assert names_mig_devices(["MIG-1234-5678"])
    assert names_mig_devices(["0", "MIG-1234"])
    assert not names_mig_devices(["0", "GPU-1234"])
    assert not names_mig_devices(None)
    assert not names_mig_devices([])
