"""fabric.requeue_requested: SIGUSR1/SIGTERM sent to one rank of a real 2-process run stop every rank at one step.

This is what a SLURM job sees before its time limit (``sbatch --signal=USR1@90``) or on preemption
(SIGTERM); the resumed run must end with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]  # several multi-process jobs per test

# argv: output folder, total steps, step at which to wait for a signal (0: never wait)
TRAIN = """
import os, sys, time
from pathlib import Path
import torch
from fabric_core import Fabric

out, total, pause_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
fabric = Fabric(accelerator="cpu", strategy="ddp", devices=2)
fabric.launch()
fabric.seed_everything(7)
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model, optimizer = fabric.setup(model, optimizer)
state = {"model": model, "optimizer": optimizer, "step": 0}
checkpoint = out / "checkpoint.pt"
resumed = checkpoint.exists()
if resumed:
    fabric.load(checkpoint, state)
(out / f"pid{fabric.global_rank}").write_text(str(os.getpid()))
while state["step"] < total:
    data = torch.Generator().manual_seed(100 * state["step"] + fabric.global_rank)
    x = torch.randn(8, 4, generator=data)
    loss = (model(x) - x[:, :2]).pow(2).mean()
    optimizer.zero_grad()
    fabric.backward(loss)
    optimizer.step()
    state["step"] += 1
    if state["step"] == pause_at and not resumed:
        fabric.barrier()
        if fabric.global_rank == 0:
            (out / "paused").write_text("")
        while not fabric.requeue_requested:  # every rank reads it each round: a collective
            time.sleep(0.05)
    if fabric.requeue_requested:
        fabric.save(checkpoint, state)
        own = fabric._requeue_signals.received
        sys.stdout.write(f"rank {fabric.global_rank} saved at step {state['step']} own signal {own}\\n")
        sys.exit(0)
if fabric.global_rank == 0:
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "final.pt")
sys.stdout.write(f"rank {fabric.global_rank} finished at step {state['step']}\\n")
"""


def _wait_for(path: Path, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.1)


def _start(tmp_path: Path, out: Path, total: int, pause_at: int):
    import subprocess
    import sys
    import textwrap

    from conftest import _CLUSTER_VARS

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN))
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(total), str(pause_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )


def _finish(proc, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out}\n{err}"
    return out


@pytest.mark.parametrize(("signum", "target_rank"), [(signal.SIGUSR1, 1), (signal.SIGTERM, 0)])
def test_a_signal_to_one_rank_stops_all_ranks_at_the_same_step_and_the_resumed_run_matches(
    tmp_path, signum, target_rank
):
    interrupted = tmp_path / "interrupted"
    proc = _start(tmp_path, interrupted, total=12, pause_at=5)
    _wait_for(interrupted / "paused", proc)
    os.kill(int((interrupted / f"pid{target_rank}").read_text()), signum)
    out = _finish(proc)
    # Both ranks stop at the step where they waited; only the rank that got the signal saw it itself.
    other = 1 - target_rank
    assert f"rank {target_rank} saved at step 5 own signal {signal.Signals(signum).name}" in out, out
    assert f"rank {other} saved at step 5 own signal None" in out, out
    assert not (interrupted / "final.pt").exists()

    if signum == signal.SIGTERM:
        return  # resuming does not depend on which signal stopped the run: checked once, below
    _finish(_start(tmp_path, interrupted, total=12, pause_at=0))  # the requeued job resumes from the checkpoint
    reference = tmp_path / "reference"
    _finish(_start(tmp_path, reference, total=12, pause_at=0))
    resumed, uninterrupted = torch.load(interrupted / "final.pt"), torch.load(reference / "final.pt")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=0)


def test_without_reading_the_flag_the_signals_keep_their_default_action(script_runner):
    """A loop that never asks is not changed: SIGTERM still ends the process (no silent hang on preemption)."""
    proc = script_runner(
        """
        import os, signal, time
        from fabric_core import Fabric

        fabric = Fabric(accelerator="cpu", devices=1)
        fabric.launch()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("still running")
        """
    )
    assert proc.returncode == -signal.SIGTERM, proc.stdout + proc.stderr
    assert "still running" not in proc.stdout


def test_after_the_first_read_a_signal_sets_the_flag_in_a_single_process(script_runner):
    proc = script_runner(
        """
        import os, signal
        from fabric_core import Fabric

        fabric = Fabric(accelerator="cpu", devices=1)
        fabric.launch()
        print("before", fabric.requeue_requested)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("after", fabric.requeue_requested, fabric._requeue_signals.received)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "before False" in proc.stdout and "after True SIGUSR1" in proc.stdout
