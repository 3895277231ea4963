"""Open MPI's real `mpirun -n 2`: Fabric detects MPIEnvironment and trains to the same result as `fabric run`."""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import DIGITS_ARGS, EXAMPLE, PROBE, PYTHON, clean_env, probes, require, result_lines, run

pytestmark = [pytest.mark.cluster, pytest.mark.multiprocess, pytest.mark.timeout(900)]


def test_mpirun_runs_the_example_with_ranks_from_open_mpi(reference_lines, tmp_path):
    require(shutil.which("mpirun") is not None, "Open MPI's mpirun (Debian: openmpi-bin)")
    mpirun = ["mpirun", "-n", "2", "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        mpirun.append("--allow-run-as-root")
    proc = run([*mpirun, PYTHON, PROBE, EXAMPLE, *DIGITS_ARGS], tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = probes(proc.stdout)
    assert [p["rank"] for p in found] == [0, 1], proc.stdout
    assert all(p["environment"] == "MPIEnvironment" and p["world_size"] == 2 for p in found)
    assert found[0]["main_port"] == found[1]["main_port"]
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert result_lines(proc.stdout) == reference_lines
