"""The XLA accelerator and plan resolution: which accelerator, devices, strategy and precision get chosen.

Plan resolution starts no XLA runtime, so these tests need torch_xla installed but no device.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from fabric_core.connector import resolve_plan
from fabric_core.errors import MisconfigurationError
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import TrueDtypePrecision
from fabric_xla import XLAAccelerator, XLAUnavailableError
from xla_helpers import requires_xla


@pytest.fixture
def xla_cpu(monkeypatch):
    """PyTorch/XLA's CPU device with two virtual devices (what the xla_cpu session sets)."""
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "2")


def test_priority_keeps_auto_off_xla_cpu_and_on_tpu(monkeypatch):
    from fabric_xla import probe

    monkeypatch.setattr(probe, "installation_problem", lambda: None)  # as where torch_xla is installed
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    assert XLAAccelerator.auto_select_priority() is None  # "auto" never picks the emulated device
    assert XLAAccelerator.is_available()  # ... while accelerator="tpu" still reaches it
    monkeypatch.setenv("PJRT_DEVICE", "TPU")
    assert XLAAccelerator.auto_select_priority() > 0  # above the CPU accelerator (0)


def test_not_available_without_tpu_or_pjrt_device(monkeypatch):
    monkeypatch.delenv("PJRT_DEVICE", raising=False)
    if XLAAccelerator.is_available():
        pytest.skip("this machine has a TPU")
    assert not XLAAccelerator.is_available()
    from fabric_xla.probe import installation_problem

    expected = installation_problem() or "PJRT_DEVICE=CPU"  # the first thing missing is what is reported
    assert expected in XLAAccelerator.unavailable_reason()


def test_parse_devices(xla_cpu):
    assert XLAAccelerator.parse_devices("auto") == [0, 1]
    assert XLAAccelerator.parse_devices(None) == [0, 1]
    assert XLAAccelerator.parse_devices(1) == [0]
    assert XLAAccelerator.parse_devices([1]) == [1]
    assert XLAAccelerator.parse_devices(-1) == [0, 1]
    with pytest.raises(MisconfigurationError, match=r"only 2 device\(s\) are available.*Valid forms"):
        XLAAccelerator.parse_devices(3)
    with pytest.raises(MisconfigurationError, match="Valid forms"):
        XLAAccelerator.parse_devices("many")


def test_auto_strategy(xla_cpu, monkeypatch):
    accelerator = XLAAccelerator()
    assert accelerator.auto_strategy(1) == "single_xla"
    assert accelerator.auto_strategy(2) == "xla_spmd"  # multi-process collectives hang on XLA:CPU
    monkeypatch.setenv("PJRT_DEVICE", "TPU")
    assert accelerator.auto_strategy(4) == "xla"


def test_precision_choices_are_explained():
    accelerator = XLAAccelerator()
    with pytest.raises(MisconfigurationError, match=r"bfloat16, not float16.*bf16-mixed"):
        accelerator.check_precision("16-mixed")
    with pytest.raises(MisconfigurationError, match="float64"):
        accelerator.check_precision("64-true")
    mixed = accelerator.create_precision("bf16-mixed")
    assert isinstance(mixed, MixedPrecision) and mixed.device_type == "xla" and mixed.dtype == torch.bfloat16
    true_bf16 = accelerator.create_precision("bf16-true")
    assert isinstance(true_bf16, TrueDtypePrecision) and true_bf16.dtype == torch.bfloat16


@requires_xla()
class TestPlanResolution:
    def test_auto_never_picks_xla_on_the_cpu_device(self, xla_cpu):
        assert resolve_plan(accelerator="auto").accelerator.name == "cpu"

    def test_auto_picks_xla_when_a_tpu_is_declared(self, monkeypatch):
        monkeypatch.setenv("PJRT_DEVICE", "TPU")
        monkeypatch.setenv("TPU_NUM_DEVICES", "4")
        plan = resolve_plan(accelerator="auto")
        assert isinstance(plan.accelerator, XLAAccelerator)
        assert plan.strategy.name == "xla" and plan.devices == [0, 1, 2, 3]

    @pytest.mark.parametrize("name", ["tpu", "xla"])
    def test_explicit_names_run_on_the_cpu_device(self, xla_cpu, name):
        plan = resolve_plan(accelerator=name, devices=1)
        assert isinstance(plan.accelerator, XLAAccelerator)
        assert plan.strategy.name == "single_xla"
        assert plan.strategy.root_device == torch.device("xla", 0)

    def test_several_cpu_devices_default_to_spmd(self, xla_cpu):
        plan = resolve_plan(accelerator="tpu")
        assert plan.strategy.name == "xla_spmd" and plan.strategy.world_size == 1

    def test_explicit_tpu_without_a_device_says_how_to_get_one(self, monkeypatch):
        monkeypatch.delenv("PJRT_DEVICE", raising=False)
        if XLAAccelerator.is_available():
            pytest.skip("this machine has a TPU")
        with pytest.raises(XLAUnavailableError, match="PJRT_DEVICE=CPU"):
            resolve_plan(accelerator="tpu")

    def test_multiprocess_strategy_on_cpu_device_is_refused_before_launch(self, xla_cpu):
        with pytest.raises(MisconfigurationError, match=r"5005 and 9089.*xla_spmd"):
            resolve_plan(accelerator="tpu", strategy="xla", devices=2)

    def test_spmd_is_one_process_driving_every_device(self, xla_cpu):
        # Not distributed (one process), yet devices=2 is accepted: the strategy says it drives them all.
        plan = resolve_plan(accelerator="tpu", strategy="xla_spmd", devices=2)
        assert not plan.strategy.is_distributed and plan.strategy.one_process_drives_all_devices
        assert plan.strategy.world_size == 1 and len(plan.strategy.parallel_devices) == 2

    def test_spmd_must_span_every_device(self, xla_cpu):
        with pytest.raises(MisconfigurationError, match="cannot use a subset"):
            resolve_plan(accelerator="tpu", strategy="xla_spmd", devices=1)

    def test_xla_strategies_refuse_the_cpu_accelerator(self, xla_cpu):
        with pytest.raises(MisconfigurationError, match="does not run on accelerator 'cpu'"):
            resolve_plan(accelerator="cpu", strategy="single_xla")

    def test_float16_is_refused_at_construction(self, xla_cpu):
        with pytest.raises(MisconfigurationError, match="bf16-mixed"):
            resolve_plan(accelerator="tpu", devices=1, precision="16-mixed")

    def test_fabric_travels_to_worker_processes(self, xla_cpu, monkeypatch):
        # torch_xla.launch pickles the job even when it forks: the Fabric and its strategy must survive it.
        from fabric_core import Fabric
        from fabric_xla.launcher import _transport

        monkeypatch.setenv("CPU_NUM_DEVICES", "1")
        fabric = Fabric(accelerator="tpu", strategy="xla_fsdp", devices=1, precision="bf16-mixed")
        fabric.strategy.module_to_device
        clone = pickle.loads(_transport(fabric))
        assert clone.strategy.name == "xla_fsdp" and clone.strategy.precision.name == "bf16-mixed"
        assert pickle.loads(pickle.dumps(fabric.strategy)).name == "xla_fsdp"
