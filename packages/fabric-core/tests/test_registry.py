"""Entry-point discovery: names, install hints, and the plugin-interface version handshake."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fabric_core import registry
from fabric_core.errors import MisconfigurationError, PluginNotInstalledError, PluginVersionError


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_core_registers_its_own_implementations_through_entry_points():
    assert "cpu" in registry.available("accelerator")
    strategies = registry.available("strategy")
    for name in (
        "single_device",
        "ddp",
        "ddp_spawn",
        "ddp_fork",
        "ddp_notebook",
        "ddp_find_unused_parameters_true",
        "fsdp",
    ):
        assert name in strategies
        assert strategies[name].distribution == "fabric-core"
    assert {"32-true", "bf16-mixed", "16-mixed", "64-true", "16-true", "bf16-true"} <= set(
        registry.available("precision")
    )
    assert {"local", "torchelastic", "slurm", "lsf", "mpi", "kubeflow"} <= set(registry.available("environment"))


def test_unknown_name_lists_installed_choices():
    with pytest.raises(MisconfigurationError, match="Installed choices: .*'cpu'"):
        registry.load("accelerator", "quantum")


@pytest.mark.parametrize(
    ("kind", "name", "extra"),
    [
        ("accelerator", "tpu", "xla"),
        ("accelerator", "cuda", "cuda"),
        ("accelerator", "gpu", "cuda"),
        ("strategy", "deepspeed_stage_3", "deepspeed"),
        ("strategy", "xla_fsdp", "xla"),
    ],
)
def test_missing_sibling_gives_install_hint(kind, name, extra):
    if name in registry.available(kind):
        pytest.skip(f"{name} is installed in this environment")
    with pytest.raises(PluginNotInstalledError, match=rf'pip install "fabric-core\[{extra}\]"'):
        registry.load(kind, name)


def _fake_backend(tmp_path: Path, api_version: str | None) -> None:
    """Install (on sys.path) a distribution that registers an accelerator, declaring ``api_version``."""
    pkg = tmp_path / "fake_backend"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        f"API = {api_version!r}\n"
        "from fabric_core.accelerators.cpu import CPUAccelerator\n"
        "class FakeAccelerator(CPUAccelerator):\n    name = 'fake'\n"
    )
    dist = tmp_path / "fake_backend-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-backend\nVersion: 0.1.0\n")
    lines = ["[fabric_core.accelerators]", "fake = fake_backend:FakeAccelerator"]
    if api_version is not None:
        lines += ["[fabric_core.plugin_api]", "fake_backend = fake_backend:API"]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fake_backend", None)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])  # backends built for older minors still load
def test_compatible_backend_loads(on_path, version):
    _fake_backend(on_path, version)
    assert registry.load("accelerator", "fake").name == "fake"


@pytest.mark.parametrize("version", ["2.0", "1.99", "0.9"])
def test_incompatible_backend_is_refused_naming_both_versions(on_path, version):
    _fake_backend(on_path, version)
    with pytest.raises(
        PluginVersionError, match=rf"built for Fabric plugin interface {version}.*provides 1\.2.*pip install -U"
    ):
        registry.load("accelerator", "fake")


def test_backend_without_declared_version_is_refused(on_path):
    _fake_backend(on_path, None)
    with pytest.raises(PluginVersionError, match="does not declare"):
        registry.load("accelerator", "fake")


def test_fabric_auto_skips_a_broken_backend(on_path):
    _fake_backend(on_path, "7.0")
    from fabric_core import Fabric

    assert Fabric(accelerator="auto").accelerator.name == "cpu"


def test_import_is_lazy_and_imports_no_backend():
    import subprocess

    code = (
        "import sys, fabric_core; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fabric_cuda','fabric_xla','fabric_deepspeed','fabric_loggers','deepspeed','torch_xla','tensorboard')]; "
        "print('torch' in sys.modules, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "[]"]


def test_creating_a_cpu_fabric_imports_no_backend_package():
    import subprocess

    code = (
        "import sys; from fabric_core import Fabric; Fabric(accelerator='cpu'); "
        "print([m for m in sys.modules if m.split('.')[0] in ('fabric_cuda','fabric_xla','fabric_deepspeed','fabric_loggers','deepspeed','torch_xla')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
