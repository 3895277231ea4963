"""The CUDA accelerator as plan resolution sees it: registration, selection, devices, precisions."""

from __future__ import annotations

import pickle

import pytest
import torch
from cuda_fakes import fake_gpus, forbid_cuda_init
from fabric_core import Fabric, registry
from fabric_core.accelerators.cpu import CPUAccelerator
from fabric_core.connector import resolve_plan
from fabric_core.errors import MisconfigurationError
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import TrueDtypePrecision
from fabric_cuda import CUDAAccelerator, CUDAMixedPrecision, device_count

cpu_only_torch = pytest.mark.skipif(torch.backends.cuda.is_built(), reason="checks a CPU-only build of torch")


def test_registered_as_cuda_and_gpu() -> None:
    names = registry.available("accelerator")
    assert names["cuda"].distribution == "fabric-cuda"
    assert registry.load("accelerator", "cuda") is CUDAAccelerator  # passes the plugin API handshake
    assert registry.load("accelerator", "gpu") is CUDAAccelerator


def test_outranks_the_cpu_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    assert CUDAAccelerator.auto_select_priority() > CPUAccelerator.auto_select_priority()


def test_auto_picks_cuda_when_gpus_are_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    plan = resolve_plan(accelerator="auto", devices=1, env={})
    assert isinstance(plan.accelerator, CUDAAccelerator)
    assert plan.strategy.root_device == torch.device("cuda", 0)


@cpu_only_torch
def test_auto_picks_the_cpu_without_gpus() -> None:
    assert isinstance(resolve_plan(accelerator="auto", env={}).accelerator, CPUAccelerator)


@cpu_only_torch
@pytest.mark.parametrize("name", ["cuda", "gpu"])
def test_asking_for_cuda_without_a_gpu_fails_clearly(name: str) -> None:
    with pytest.raises(MisconfigurationError, match=rf"accelerator='{name}'.*no {name} device is available.*'cpu'"):
        Fabric(accelerator=name)


@pytest.mark.parametrize(
    ("devices", "expected"),
    [
        (None, [0, 1, 2, 3]),
        ("auto", [0, 1, 2, 3]),
        (-1, [0, 1, 2, 3]),
        ("-1", [0, 1, 2, 3]),
        (2, [0, 1]),
        ("3", [0, 1, 2]),
        ("0,2", [0, 2]),
        ("1, 3", [1, 3]),
        ([3, 1], [3, 1]),
    ],
)
def test_device_forms(monkeypatch: pytest.MonkeyPatch, devices: object, expected: list[int]) -> None:
    fake_gpus(monkeypatch, 4)
    assert CUDAAccelerator.parse_devices(devices) == expected


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        (5, "only 4 device"),
        ("0,4", "only indices 0..3"),
        ([4], "only indices 0..3"),
        (0, "must be positive"),
        ("0,0", "repeat"),
        ("gpu0", "not a number"),
        (True, "bool"),
        (1.5, "float"),
    ],
)
def test_invalid_devices_list_the_valid_forms(monkeypatch: pytest.MonkeyPatch, devices: object, message: str) -> None:
    fake_gpus(monkeypatch, 4)
    with pytest.raises(MisconfigurationError, match=message) as info:
        CUDAAccelerator.parse_devices(devices)
    assert "Valid forms" in str(info.value)


def test_indices_count_the_gpus_cuda_visible_devices_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4, visible="2,3")
    assert CUDAAccelerator.parse_devices(-1) == [0, 1]
    with pytest.raises(MisconfigurationError, match=r"only indices 0\.\.1"):
        CUDAAccelerator.parse_devices([2])


def test_auto_devices_without_gpus_explains_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4, visible="")
    with pytest.raises(MisconfigurationError, match="CUDA_VISIBLE_DEVICES='' hides all 4 GPU"):
        CUDAAccelerator.parse_devices("auto")


def test_devices_and_backend() -> None:
    accelerator = CUDAAccelerator()
    assert accelerator.get_device(3) == torch.device("cuda", 3)
    assert accelerator.default_process_group_backend() == "nccl"
    assert accelerator.auto_strategy(1) == "single_device"
    assert accelerator.auto_strategy(2) == "ddp"


def test_plan_resolution_does_not_initialise_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4)
    forbid_cuda_init(monkeypatch)
    plan = resolve_plan(accelerator="cuda", devices=[2], precision="16-mixed", env={})
    assert plan.strategy.root_device == torch.device("cuda", 2)
    assert isinstance(plan.precision, CUDAMixedPrecision)


def test_several_gpus_resolve_to_ddp_over_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4)
    forbid_cuda_init(monkeypatch)
    plan = resolve_plan(accelerator="gpu", devices="0,2", env={})
    assert plan.devices == [0, 2]
    assert plan.strategy.name == "ddp"
    assert plan.strategy.parallel_devices == [torch.device("cuda", 0), torch.device("cuda", 2)]
    assert plan.strategy.process_group_backend == "nccl"


@pytest.mark.parametrize(
    ("precision", "kind", "dtype"),
    [
        ("16-mixed", CUDAMixedPrecision, torch.float16),
        ("bf16-mixed", MixedPrecision, torch.bfloat16),
        ("16-true", TrueDtypePrecision, torch.float16),
        ("bf16-true", TrueDtypePrecision, torch.bfloat16),
        ("64-true", TrueDtypePrecision, torch.float64),
    ],
)
def test_precisions_on_cuda(monkeypatch: pytest.MonkeyPatch, precision: str, kind: type, dtype: torch.dtype) -> None:
    fake_gpus(monkeypatch, 1)
    plan = resolve_plan(accelerator="cuda", precision=precision, env={})
    # Core builds the true precisions as Lightning's named subclasses (HalfPrecision, DoublePrecision).
    assert isinstance(plan.precision, kind)
    assert isinstance(plan.precision, CUDAMixedPrecision) == (kind is CUDAMixedPrecision)  # a scaler only for 16-mixed
    assert plan.precision.dtype == dtype
    if isinstance(plan.precision, MixedPrecision):
        assert plan.precision.device_type == "cuda"
    assert plan.accelerator._precision == precision  # remembered for the checks on the device


def test_16_mixed_scales_and_bf16_mixed_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    accelerator = CUDAAccelerator()
    half = accelerator.create_precision("16-mixed")
    assert isinstance(half, CUDAMixedPrecision)
    assert half._scaler is None  # built at first use, in the worker
    bf16 = accelerator.create_precision("bf16-mixed")
    assert isinstance(bf16, MixedPrecision) and bf16.scaler is None
    assert accelerator.create_precision("32-true") is None  # core's registry provides it
    fake_gpus(monkeypatch, 1)
    assert type(resolve_plan(accelerator="cuda", precision="32-true", env={}).precision).__name__ == "Precision"


def test_setup_device_selects_the_gpu_then_checks_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    selected: list[torch.device] = []
    checked: list[tuple[torch.device, str | None]] = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.setattr("fabric_cuda.device_hints.check_precision_on_device", lambda d, p: checked.append((d, p)))
    accelerator = CUDAAccelerator()
    accelerator.check_precision("bf16-mixed")
    accelerator.setup_device(torch.device("cuda", 1))
    assert selected == [torch.device("cuda", 1)]
    assert checked == [(torch.device("cuda", 1), "bf16-mixed")]


def test_setup_device_refuses_other_devices() -> None:
    with pytest.raises(MisconfigurationError, match="only set up a CUDA device, got cpu"):
        CUDAAccelerator().setup_device(torch.device("cpu"))


def test_survives_pickling_for_spawned_workers() -> None:
    accelerator = CUDAAccelerator()
    accelerator.check_precision("32-true")
    assert pickle.loads(pickle.dumps(accelerator))._precision == "32-true"


def test_availability_follows_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 3)
    assert CUDAAccelerator.is_available() and CUDAAccelerator.auto_device_count() == 3
    monkeypatch.setattr(device_count, "nvml_device_uuids", lambda: [])
    assert not CUDAAccelerator.is_available() and CUDAAccelerator.auto_device_count() == 0
    assert CUDAAccelerator.unavailable_reason() == "the NVIDIA driver reports no GPU"
