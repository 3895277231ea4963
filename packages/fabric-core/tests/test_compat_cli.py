"""The `fabric run` options checked against installed plugins, OMP threads, and the command's identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fabric_core import registry
from fabric_core.cli import identity
from fabric_core.cli.main import DEFAULT_MAIN_PORT, cli, set_omp_threads
from fabric_core.utilities.cpus import available_cpus


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text("print('ran')\n")
    return path


@pytest.mark.parametrize(
    ("option", "value", "listed"),
    [
        ("--strategy", "ddpp", "fsdp_cpu_offload"),
        ("--accelerator", "quantum", "cpu"),
        ("--precision", "fp8", "bf16-mixed"),
    ],
)
def test_run_refuses_names_no_installed_plugin_registers(script, option, value, listed):
    result = CliRunner().invoke(cli, ["run", option, value, str(script)])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output
    assert listed in result.output


def test_run_choices_come_from_the_registry(script):
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0
    for name in registry.available("strategy"):
        assert name in result.output
    assert f"default {DEFAULT_MAIN_PORT}" in " ".join(result.output.split())
    assert DEFAULT_MAIN_PORT == 29400  # Lightning Fabric's default main port


def test_run_names_the_package_for_a_known_uninstalled_name(script):
    if "tpu" in registry.available("accelerator"):
        pytest.skip("fabric-xla is installed here")
    result = CliRunner().invoke(cli, ["run", "--accelerator", "tpu", str(script)])
    assert result.exit_code == 2
    assert 'pip install "fabric-core[xla]"' in result.output


def test_omp_threads_share_the_cores_unless_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # recorded first: teardown restores the value from before the test
    monkeypatch.delenv("OMP_NUM_THREADS")
    set_omp_threads(2)
    assert os.environ["OMP_NUM_THREADS"] == str(max(1, available_cpus() // 2))
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    set_omp_threads(2)
    assert os.environ["OMP_NUM_THREADS"] == "7"


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_run_sets_omp_threads_in_every_worker(tmp_path):
    script = tmp_path / "show.py"
    # each worker writes its own file (their stdout lines may interleave)
    script.write_text("import os\nopen(f\"omp_{os.environ['RANK']}.txt\", 'w').write(os.environ['OMP_NUM_THREADS'])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RANK", "WORLD_SIZE")}
    for user_value, expected in ((None, str(max(1, available_cpus() // 2))), ("3", "3")):
        run_env = dict(env, **({"OMP_NUM_THREADS": user_value} if user_value else {}))
        result = subprocess.run(
            [sys.executable, "-m", "fabric_core.cli", "run", "--devices", "2", str(script)],
            capture_output=True,
            text=True,
            timeout=600,
            env=run_env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert [(tmp_path / f"omp_{rank}.txt").read_text() for rank in (0, 1)] == [expected, expected]


def test_fabric_core_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in identity.metadata.entry_points(group="console_scripts")}
    assert scripts["fabric-core"] == "fabric_core.cli.main:main"
    assert "fabric-core" in identity.fabric_command_owners()


def _fake_lightning(tmp_path: Path) -> None:
    """A distribution on sys.path that also declares a `fabric` console script, as Lightning Fabric does."""
    dist = tmp_path / "fake_lightning_fabric-9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-lightning-fabric\nVersion: 9.9\n")
    (dist / "entry_points.txt").write_text("[console_scripts]\nfabric = fake_lightning_fabric.cli:_main\n")


def test_version_says_which_command_runs_when_another_fabric_is_installed(tmp_path, monkeypatch):
    _fake_lightning(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fabric").write_text("#!/bin/sh\nfrom fake_lightning_fabric.cli import _main\n")
    (bin_dir / "fabric").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("fabric-core ")
    note = result.output.splitlines()[1]
    assert note.startswith("Note: ") and "fake-lightning-fabric" in note
    assert "also install(s) a `fabric` command" in note
    assert "the shell finds first is fake-lightning-fabric's" in note
    assert "Run `fabric-core`" in result.output


def test_version_without_a_competing_command(monkeypatch):
    monkeypatch.setattr(identity, "fabric_command_owners", lambda: ["fabric-core"])
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "fabric-core" in result.output
    assert "also install" not in result.output
