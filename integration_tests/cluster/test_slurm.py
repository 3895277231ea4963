"""Real SLURM (slurmctld + slurmd + munge on this machine): srun, sbatch, preemption and requeue, interactive shells."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
import torch

from .conftest import DIGITS_ARGS, EXAMPLE, PROBE, PYTHON, RESUMABLE, TIMEOUT, clean_env, probes, result_lines, run

pytestmark = [pytest.mark.cluster, pytest.mark.multiprocess, pytest.mark.timeout(900)]


def _check_slurm_probes(output: str, host: str) -> None:
    found = probes(output)
    assert [p["rank"] for p in found] == [0, 1], output
    for probe in found:
        assert probe["environment"] == "SLURMEnvironment"
        assert probe["world_size"] == 2 and probe["node_rank"] == 0
        assert probe["main_address"] == host  # the first host of SLURM_JOB_NODELIST
    assert found[0]["main_port"] == found[1]["main_port"]  # derived from the job id by every task


def test_srun_runs_the_example_with_ranks_from_slurm(slurm, reference_lines, tmp_path):
    """`srun -n 2 python examples/digits.py --strategy ddp`: SLURMEnvironment, same result as `fabric run --devices 2`."""
    proc = run(
        ["srun", "-n", "2", PYTHON, PROBE, EXAMPLE, *DIGITS_ARGS],
        tmp_path,
        env=clean_env({"SLURM_CONF": slurm.env["SLURM_CONF"]}),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm.log_tail()
    _check_slurm_probes(proc.stdout, slurm.host)
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert result_lines(proc.stdout) == reference_lines


def _batch_script(path: Path, output: Path, body: str, *options: str) -> Path:
    lines = [
        "#!/bin/bash",
        "#SBATCH --job-name=fabric-test",
        f"#SBATCH --output={output}",
        "#SBATCH --ntasks-per-node=2",
    ]
    lines += [f"#SBATCH {option}" for option in options]
    path.write_text("\n".join([*lines, body, ""]))
    return path


def test_sbatch_script_with_two_tasks_per_node(slurm, reference_lines, tmp_path):
    output = tmp_path / "job.out"
    command = shlex.join([PYTHON, PROBE, EXAMPLE, *DIGITS_ARGS])
    script = _batch_script(tmp_path / "job.sbatch", output, f"srun {command}")
    proc = run(["sbatch", "--wait", str(script)], tmp_path, env=clean_env({"SLURM_CONF": slurm.env["SLURM_CONF"]}))
    text = output.read_text() if output.exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + text + slurm.log_tail()
    _check_slurm_probes(text, slurm.host)
    assert result_lines(text) == reference_lines


def test_interactive_srun_shell_is_not_mistaken_for_a_batch_job(slurm, reference_lines, tmp_path):
    """`srun --pty bash`, then python in it: the job is named `bash`, so Fabric starts its 2 processes itself."""
    inner = shlex.join([PYTHON, PROBE, EXAMPLE, "--devices", "2", *DIGITS_ARGS])
    srun = shlex.join(["srun", "-n", "1", "--pty", "bash", "-c", inner])
    # `script` gives srun the terminal that --pty needs.
    proc = run(["script", "-qec", srun, "/dev/null"], tmp_path, env=clean_env({"SLURM_CONF": slurm.env["SLURM_CONF"]}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p["environment"] for p in probes(proc.stdout)] == ["LocalEnvironment"]
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert result_lines(proc.stdout) == reference_lines


def _wait_until(condition, what: str, slurm, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{slurm.log_tail()}")
        time.sleep(0.5)


def test_preempted_job_saves_is_requeued_and_resumes_to_the_same_weights(slurm, tmp_path):
    """scancel --signal=USR1 mid-run -> fabric.requeue_requested -> save + scontrol requeue -> resume -> same weights."""
    env = clean_env({"SLURM_CONF": slurm.env["SLURM_CONF"]})
    reference = tmp_path / "reference"
    reference.mkdir()
    proc = run(["srun", "-n", "2", PYTHON, RESUMABLE, str(reference), "12", "0"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "finished at step 12" in proc.stdout

    work = tmp_path / "preempted"
    work.mkdir()
    output = work / "job.out"
    command = shlex.join([PYTHON, RESUMABLE, str(work), "12", "5"])
    script = _batch_script(work / "job.sbatch", output, f"srun {command}", "--requeue", "--open-mode=append")
    job = slurm.command("sbatch", "--parsable", str(script)).stdout.strip().split(";")[0]
    _wait_until(lambda: (work / "paused").exists(), "the job to reach step 5", slurm)
    slurm.command("scancel", "--signal=USR1", job)  # what `sbatch --signal=USR1@90` sends before the time limit

    def requeued() -> bool:
        state = slurm.command("squeue", "-h", "-j", job, "-o", "%T %r", check=False).stdout.split()
        return state[:1] == ["PENDING"] or (work / "final.pt").exists()

    _wait_until(requeued, "the job to be requeued", slurm)
    # SLURM holds a requeued job for about two minutes before it is eligible again; start it now instead.
    slurm.command("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
    _wait_until(lambda: job not in slurm.jobs(), "the requeued job to finish", slurm)

    log = output.read_text()
    assert "rank 0 saved at step 5" in log and "rank 1 saved at step 5" in log, log
    assert f"requeued job {job}" in log, log
    assert "start at step 5 (restart 1, world size 2)" in log, log
    assert "finished at step 12" in log, log
    resumed, uninterrupted = torch.load(work / "final.pt"), torch.load(reference / "final.pt")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=0)
