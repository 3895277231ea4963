"""Fixtures of the `cluster` leg: a live one-node SLURM cluster, the reference run, helpers to read results.

These tests start system daemons and run for minutes, so they are collected only in the `cluster`
nox session (which sets FABRIC_CLUSTER_LEG=1 after installing SLURM, munge and Open MPI); the
`integration` session leaves this folder alone. A missing tool skips its tests with the reason,
or fails them under FABRIC_REQUIRE_HARDWARE=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import slurm_cluster

if os.environ.get("FABRIC_CLUSTER_LEG") != "1":
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
EXAMPLE = str(ROOT / "examples" / "digits.py")
SCRIPTS = Path(__file__).parent / "scripts"
PROBE = str(SCRIPTS / "probe.py")
RESUMABLE = str(SCRIPTS / "resumable.py")
#: The training run every launcher must reproduce exactly (same seed, two processes).
DIGITS_ARGS = ("--strategy", "ddp", "--epochs", "2")
TIMEOUT = 600  # the machine can be loaded 5-10x; a run normally takes 20-40 s


def require(present: bool, what: str) -> None:
    """Skip (or fail under FABRIC_REQUIRE_HARDWARE=1) when ``what`` is missing."""
    if present:
        return
    message = f"needs {what}, which this machine does not have"
    if os.environ.get("FABRIC_REQUIRE_HARDWARE") == "1":
        pytest.fail(f"FABRIC_REQUIRE_HARDWARE=1 but this test {message}", pytrace=False)
    pytest.skip(message)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without scheduler or launcher variables, one thread per process."""
    prefixes = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "FABRIC_CLI_", "MASTER_", "TORCHELASTIC_")
    names = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


def result_lines(output: str) -> list[str]:
    """The lines of the digits example that state the training result (per epoch and final).

    Progress bars (``fabric.progress`` draws one in a terminal, as under ``srun --pty``) are left out.
    """
    pattern = re.compile(r"epoch \d+/\d+\s.*?test accuracy [0-9.]+|final test accuracy [0-9.]+")
    lines = [match.group(0) for line in output.splitlines() if (match := pattern.search(line))]
    assert lines, output
    return lines


def probes(output: str) -> list[dict[str, object]]:
    """The ``PROBE`` lines of scripts/probe.py, one per process, ordered by rank."""
    found = [json.loads(line.split("PROBE ", 1)[1]) for line in output.splitlines() if "PROBE {" in line]
    return sorted(found, key=lambda p: p.get("rank", 0))


@pytest.fixture(scope="session")
def reference_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`fabric run --devices 2 examples/digits.py --strategy ddp --epochs 2`: the result all launchers must match."""
    cwd = tmp_path_factory.mktemp("reference")
    cli = [PYTHON, "-m", "fabric_core.cli", "run", "--devices", "2", "--accelerator", "cpu"]
    proc = run([*cli, EXAMPLE, *DIGITS_ARGS], cwd)
    assert proc.returncode == 0, proc.stderr
    assert "Training on 2 process(es), ddp" in proc.stdout
    return result_lines(proc.stdout)


@pytest.fixture(scope="session")
def slurm() -> Iterator[slurm_cluster.SlurmCluster]:
    """A running one-node SLURM cluster (2 CPUs); stopped, with every job, when the session ends."""
    missing = slurm_cluster.missing_commands()
    require(
        not missing, f"SLURM and munge ({', '.join(missing)} not found; Debian: slurmctld slurmd slurm-client munge)"
    )
    require(os.geteuid() == 0, "root (the test cluster runs slurmd and munged as root)")
    cluster = slurm_cluster.start(cpus=2)
    try:
        yield cluster
    finally:
        cluster.stop()
