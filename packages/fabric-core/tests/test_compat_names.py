"""Names Lightning scripts import, at the same paths under fabric_core; install hints; cheap imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch
from fabric_core import registry
from fabric_core.errors import MisconfigurationError, PluginNotInstalledError


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("fabric_core.accelerators", "Accelerator"),
        ("fabric_core.accelerators", "CPUAccelerator"),
        ("fabric_core.accelerators", "MPSAccelerator"),
        ("fabric_core.strategies", "Strategy"),
        ("fabric_core.strategies", "DDPStrategy"),
        ("fabric_core.strategies", "FSDPStrategy"),
        ("fabric_core.strategies", "SingleDeviceStrategy"),
        ("fabric_core.strategies", "ParallelStrategy"),
        ("fabric_core.plugins.collectives", "TorchCollective"),
        ("fabric_core.plugins.collectives", "Collective"),
        ("fabric_core.plugins.collectives", "CollectibleGroup"),
        ("fabric_core.wrappers", "_unwrap_objects"),
    ],
)
def test_package_level_names(module, name):
    assert getattr(importlib.import_module(module), name) is not None
    assert name in dir(importlib.import_module(module)) or name.startswith("_")


def test_deepspeed_strategy_resolves_through_the_entry_points():
    import fabric_core.strategies as strategies

    if importlib.util.find_spec("fabric_deepspeed") is None:
        with pytest.raises(PluginNotInstalledError, match=r'pip install "fabric-core\[deepspeed\]"'):
            _ = strategies.DeepSpeedStrategy
        return
    from fabric_deepspeed import DeepSpeedStrategy

    assert strategies.DeepSpeedStrategy is DeepSpeedStrategy


def test_unknown_package_name_is_an_attribute_error():
    import fabric_core.strategies as strategies

    with pytest.raises(AttributeError, match="NoSuchStrategy"):
        _ = strategies.NoSuchStrategy
    assert not hasattr(strategies, "NoSuchStrategy")


def test_cpu_accelerator_statics_as_in_lightning():
    from fabric_core.accelerators import CPUAccelerator

    assert CPUAccelerator.name() == "cpu" == CPUAccelerator.name
    assert CPUAccelerator.is_available() and CPUAccelerator.auto_device_count() == 1
    assert CPUAccelerator.get_parallel_devices(2) == [torch.device("cpu")] * 2
    assert CPUAccelerator.get_parallel_devices("3") == [torch.device("cpu")] * 3
    CPUAccelerator().setup_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="Device should be CPU"):
        CPUAccelerator().setup_device(torch.device("cuda"))


def test_mps_accelerator_where_torch_has_no_mps(monkeypatch):
    from fabric_core import Fabric
    from fabric_core.accelerators import MPSAccelerator

    assert MPSAccelerator.name() == "mps"
    with pytest.raises(ValueError, match="Device should be MPS"):
        MPSAccelerator().setup_device(torch.device("cpu"))
    if torch.backends.mps.is_available():
        monkeypatch.setenv("DISABLE_MPS", "1")  # make the unavailable path reachable on a Mac too
    assert not MPSAccelerator.is_available()
    with pytest.raises(MisconfigurationError, match="no mps device is available on this machine"):
        Fabric(accelerator="mps")
    assert Fabric(accelerator="auto").accelerator.name == "cpu"


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs an Apple-silicon Mac with MPS")
def test_mps_accelerator_resolves_where_torch_has_mps():
    from fabric_core import Fabric

    fabric = Fabric(accelerator="mps")
    assert fabric.device.type == "mps"


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("accelerator", "xla_debug"),
        ("strategy", "deepspeed_stage_9"),
        ("strategy", "xla_whatever"),
        ("accelerator", "gpuu"),
    ],
)
def test_unknown_names_list_the_valid_ones_without_an_install_hint(kind, name):
    with pytest.raises(MisconfigurationError) as info:
        registry.load(kind, name)
    assert not isinstance(info.value, PluginNotInstalledError)
    assert "pip install" not in str(info.value)
    assert "Installed choices:" in str(info.value)


def test_no_install_hint_for_a_package_that_is_installed(monkeypatch):
    monkeypatch.setattr(registry, "_extra_installed", lambda extra: True)
    assert registry.install_hint("accelerator", "tpu") is None
    monkeypatch.setattr(registry, "_extra_installed", lambda extra: False)
    assert registry.install_hint("accelerator", "tpu") == 'pip install "fabric-core[xla]"'
    assert registry.install_hint("strategy", "deepspeed_stage_3_offload_nvme") == 'pip install "fabric-core[deepspeed]"'
    assert registry.install_hint("accelerator", "xla_debug") is None


def test_importing_fabric_core_stays_cheap():
    code = (
        "import sys, fabric_core, fabric_core.utilities, fabric_core.accelerators, fabric_core.plugins.collectives; "
        "heavy = [m for m in ('torch', 'fabric_deepspeed', 'fabric_cuda', 'fabric_xla', 'fabric_loggers') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
