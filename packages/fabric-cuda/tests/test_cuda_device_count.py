"""Counting GPUs: NVML first, honouring CUDA_VISIBLE_DEVICES; torch's count only when NVML cannot answer."""

from __future__ import annotations

import pynvml
import pytest
import torch
from cuda_fakes import fake_gpus, forbid_cuda_init
from fabric_cuda import device_count

cpu_only_torch = pytest.mark.skipif(torch.backends.cuda.is_built(), reason="checks a CPU-only build of torch")


@cpu_only_torch
def test_cpu_build_of_torch_has_no_gpus() -> None:
    assert device_count.num_cuda_devices() == 0
    assert device_count.is_cuda_available() is False
    reason = device_count.unavailable_reason()
    assert "CPU-only build" in reason
    assert torch.__version__ in reason


def test_counts_nvml_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4)
    assert device_count.num_cuda_devices() == 4
    assert device_count.is_cuda_available()


def test_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4, visible="3,1")
    assert device_count.num_cuda_devices() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_count.num_cuda_devices() == 0
    assert not device_count.is_cuda_available()
    assert "CUDA_VISIBLE_DEVICES=''" in device_count.unavailable_reason()


def test_counting_does_not_initialise_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    forbid_cuda_init(monkeypatch)
    assert device_count.num_cuda_devices() == 2
    assert device_count.is_cuda_available()


def test_falls_back_to_torch_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4)
    monkeypatch.setattr(device_count, "nvml_device_uuids", lambda: None)
    monkeypatch.setattr(device_count, "_torch_device_count", lambda: 3)
    assert device_count.num_cuda_devices() == 3


def test_mig_devices_are_counted_by_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 1, visible="MIG-4f1c9d2e-0000")
    monkeypatch.setattr(device_count, "_torch_device_count", lambda: 1)
    assert device_count.num_cuda_devices() == 1


def test_initialised_runtime_is_asked_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4, visible="0")
    monkeypatch.setattr(device_count, "_cuda_initialized", lambda: True)
    monkeypatch.setattr(device_count, "_torch_device_count", lambda: 4)  # fixed when CUDA started
    assert device_count.num_cuda_devices() == 4


def test_rocm_builds_count_through_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(device_count, "_torch_is_rocm", lambda: True)
    monkeypatch.setattr(device_count, "_torch_device_count", lambda: 2)
    assert device_count.num_cuda_devices() == 2


def test_no_driver_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_count, "torch_has_cuda", lambda: True)
    monkeypatch.setattr(device_count, "_torch_is_rocm", lambda: False)
    monkeypatch.setattr(device_count, "_cuda_initialized", lambda: False)
    monkeypatch.setattr(device_count, "nvml_device_uuids", lambda: None)
    monkeypatch.setattr(device_count, "_torch_device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_count.num_cuda_devices() == 0
    assert "no NVIDIA driver" in device_count.unavailable_reason()


class FakeNVML:
    """Stands in for the driver behind the real pynvml bindings."""

    def __init__(self, uuids: list[str | bytes], fail_init: bool = False) -> None:
        self.uuids = uuids
        self.fail_init = fail_init
        self.open = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pynvml, "nvmlInit", self.init)
        monkeypatch.setattr(pynvml, "nvmlShutdown", self.shutdown)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.uuids))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", lambda handle: self.uuids[handle])

    def init(self) -> None:
        if self.fail_init:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
        self.open += 1

    def shutdown(self) -> None:
        self.open -= 1


def test_nvml_uuids_are_read_and_nvml_is_shut_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML(["GPU-aaaa", b"GPU-bbbb"])
    nvml.install(monkeypatch)
    assert device_count.nvml_device_uuids() == ["GPU-aaaa", "GPU-bbbb"]
    assert nvml.open == 0


def test_nvml_failure_means_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNVML([], fail_init=True).install(monkeypatch)
    assert device_count.nvml_device_uuids() is None

    nvml = FakeNVML(["GPU-aaaa"])
    nvml.install(monkeypatch)

    def broken(handle: int) -> str:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetUUID", broken)
    assert device_count.nvml_device_uuids() is None
    assert nvml.open == 0


def test_nvml_answer_flows_into_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNVML(["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]).install(monkeypatch)
    monkeypatch.setattr(device_count, "torch_has_cuda", lambda: True)
    monkeypatch.setattr(device_count, "_torch_is_rocm", lambda: False)
    monkeypatch.setattr(device_count, "_cuda_initialized", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-cccc,GPU-aaaa")
    assert device_count.num_cuda_devices() == 2
