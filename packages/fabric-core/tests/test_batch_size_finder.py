"""find_executable_batch_size: halves on out-of-memory errors, frees memory, lets other errors through."""

from __future__ import annotations

import logging

import pytest
import torch
from fabric_core.utilities import find_executable_batch_size
from fabric_core.utilities.batch_size_finder import is_out_of_memory


def test_halves_until_the_function_fits_and_passes_other_arguments_through() -> None:
    tried = []

    @find_executable_batch_size(starting_batch_size=128)
    def train(batch_size: int, scale: int, *, offset: int = 0) -> int:
        tried.append(batch_size)
        if batch_size > 40:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch_size} GiB")
        return batch_size * scale + offset

    assert train(10, offset=1) == 321
    assert tried == [128, 64, 32]
    tried.clear()
    assert train(1) == 32  # every call searches again from the start
    assert tried == [128, 64, 32]


def test_a_real_cpu_allocation_failure_is_retried_down_to_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    tried = []

    @find_executable_batch_size(starting_batch_size=8)
    def allocate(batch_size: int) -> None:
        tried.append(batch_size)
        torch.empty(batch_size * 2**42, dtype=torch.uint8)  # 4 TiB per sample: the allocator refuses at once

    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="even with batch size 1"):
        allocate()
    assert tried == [8, 4, 2, 1]
    assert "Out of memory at batch size 8" in caplog.text and "retrying with 4" in caplog.text


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError(
            "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input."
        ),
        RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00G."),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"
        ),
        MemoryError(),
    ],
)
def test_out_of_memory_errors_are_recognised(error: BaseException) -> None:
    assert is_out_of_memory(error)


@pytest.mark.parametrize("error", [RuntimeError("shape mismatch"), ValueError("out of memory"), KeyError("x")])
def test_other_errors_pass_through_at_once(error: Exception) -> None:
    assert not is_out_of_memory(error)
    tried = []

    @find_executable_batch_size(starting_batch_size=16)
    def train(batch_size: int) -> None:
        tried.append(batch_size)
        raise error

    with pytest.raises(type(error)) as raised:
        train()
    assert raised.value is error and tried == [16]


def test_bare_decorator_and_a_custom_reduction() -> None:
    @find_executable_batch_size
    def default(batch_size: int) -> int:
        return batch_size

    assert default() == 128
    tried = []

    @find_executable_batch_size(starting_batch_size=100, reduce_batch_size=lambda b: int(b * 0.9))
    def gentle(batch_size: int) -> int:
        tried.append(batch_size)
        if batch_size > 75:
            raise MemoryError
        return batch_size

    assert gentle() == 72 and tried == [100, 90, 81, 72]


def test_misuse_is_refused_clearly() -> None:
    @find_executable_batch_size(starting_batch_size=4)
    def train(batch_size: int) -> int:
        return batch_size

    with pytest.raises(TypeError, match="call it without that argument"):
        train(4)
    with pytest.raises(ValueError, match="starting_batch_size must be an int >= 1"):
        find_executable_batch_size(starting_batch_size=0)
    with pytest.raises(TypeError, match="first parameter"):
        find_executable_batch_size(lambda: None)

    @find_executable_batch_size(starting_batch_size=4, reduce_batch_size=lambda b: b)
    def stuck(batch_size: int) -> None:
        raise MemoryError

    with pytest.raises(ValueError, match="reduce_batch_size must return a smaller int"):
        stuck()
