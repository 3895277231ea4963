"""Fake GPUs for the unit tests: replace fabric_cuda's own driver queries, never torch's internals."""

from __future__ import annotations

import pytest
from fabric_cuda import device_count


def fake_uuids(count: int) -> list[str]:
    return [f"GPU-{index:04d}aaaa-0000-0000-0000-00000000000{index}" for index in range(count)]


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, visible: str | None = None) -> list[str]:
    """Make fabric_cuda see ``count`` NVIDIA GPUs through NVML on a CUDA build of torch.

    Falling back to torch's own count would be a bug in these scenarios, so it raises.
    """
    uuids = fake_uuids(count)
    monkeypatch.setattr(device_count, "torch_has_cuda", lambda: True)
    monkeypatch.setattr(device_count, "_torch_is_rocm", lambda: False)
    monkeypatch.setattr(device_count, "_cuda_initialized", lambda: False)
    monkeypatch.setattr(device_count, "nvml_device_uuids", lambda: list(uuids))

    def no_fallback() -> int:
        raise AssertionError("NVML answered, so torch.cuda.device_count() must not be asked")

    monkeypatch.setattr(device_count, "_torch_device_count", no_fallback)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    return uuids


def forbid_cuda_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every torch entry point that initialises CUDA fail for the duration of one test."""
    import torch

    def initialises(*args: object, **kwargs: object) -> None:
        raise AssertionError("CUDA was initialised (or its availability queried through the runtime)")

    monkeypatch.setattr(torch.cuda, "is_available", initialises)
    monkeypatch.setattr(torch.cuda, "init", initialises)
    monkeypatch.setattr(torch.cuda, "_lazy_init", initialises)
    monkeypatch.setattr(torch.cuda, "current_device", initialises)
    monkeypatch.setattr(torch.cuda, "set_device", initialises)
