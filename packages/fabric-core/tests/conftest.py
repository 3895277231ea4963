"""Fixtures for fabric-core tests: a clean environment and helpers to run scripts in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from preloaded_python import PreloadedPython

# Variables that would make a test think it runs under a scheduler or under `fabric run`.
_CLUSTER_VARS = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_JOB_NAME",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "LSB_JOBID",
    "JSM_NAMESPACE_SIZE",
    "FABRIC_LAUNCHED",
    "FABRIC_GLOBAL_SEED",
    "FABRIC_SEED_WORKERS",
    "PL_GLOBAL_SEED",
    "PL_SEED_WORKERS",
    "FABRIC_CLI_ACCELERATOR",
    "FABRIC_CLI_STRATEGY",
    "FABRIC_CLI_DEVICES",
    "FABRIC_CLI_NUM_NODES",
    "FABRIC_CLI_PRECISION",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _CLUSTER_VARS:
        monkeypatch.delenv(name, raising=False)


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test script: this one without cluster variables, unbuffered, one OpenMP thread."""
    full_env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS}
    full_env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    full_env.update(env or {})
    return full_env


def run_script(
    tmp_path: Path,
    source: str,
    *args: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    preloaded: PreloadedPython | None = None,
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to a script in ``tmp_path`` and run it in a fresh interpreter.

    With ``preloaded``, ``python script.py`` runs in a fork of that server instead (torch already imported);
    a launcher ``command`` or an environment that differs at start-up still gets a fresh interpreter.
    """
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    full_env = script_env(env)
    cmd = (command or [sys.executable]) + [str(script), *args]
    if preloaded is not None:  # a fork where it serves this command and environment, else a fresh interpreter
        return preloaded.run(cmd, cwd=tmp_path, env=full_env, timeout=timeout)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=full_env)


@pytest.fixture
def script_runner(tmp_path: Path):
    """Runs a script in a fresh interpreter: for tests of launching, killing, signals and start-up itself."""

    def run(source: str, *args: str, **kwargs):
        return run_script(tmp_path, source, *args, **kwargs)

    return run


@pytest.fixture(scope="session")
def preloaded_python() -> Iterator[PreloadedPython]:
    """One server process with torch and fabric_core imported, for the whole test session (see preloaded_python.py)."""
    server = PreloadedPython(script_env())
    yield server
    server.close()


@pytest.fixture
def preloaded_script_runner(tmp_path: Path, preloaded_python: PreloadedPython):
    """Like ``script_runner``, but ``python script.py`` starts as a fork of ``preloaded_python``: no torch import.

    For tests of what a script does once running (collectives, training, checkpoints); the processes the script
    starts (spawned workers) are still real interpreters.
    """

    def run(source: str, *args: str, **kwargs):
        return run_script(tmp_path, source, *args, preloaded=preloaded_python, **kwargs)

    return run
