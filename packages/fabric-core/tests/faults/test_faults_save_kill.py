"""SIGKILL a process while it saves checkpoints in a loop, many times: the last checkpoint always loads.

A "zygote" process imports torch and Fabric once and forks one writer per round, so that each
round costs the random delay rather than a torch import. The writer resumes from the checkpoint,
then saves a ~8 MB checkpoint with an increasing step as fast as it can and logs each completed
save; the test SIGKILLs it after a random delay and checks that the file on disk holds a step the
writer had completed (or the one whose ``os.replace`` had just happened), with consistent content.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from fabric_core.checkpoint.atomic import TMP_MARKER
from fabric_core.checkpoint.torch_io import TorchCheckpointIO
from fault_helpers import start_job

KILLS = int(os.environ.get("FAULTS_SAVE_KILLS", "30"))
MAX_DELAY = 0.3  # seconds after the writer started its loop; one save takes ~15-50 ms here
NUMEL = 1 << 20  # float32 elements per tensor: 4 MB each, two of them

ZYGOTE = r"""
import os, sys, time
import torch
from fabric_core import Fabric

NUMEL = int(sys.argv[2])

def writer(path, log, once):
    fabric = Fabric(accelerator="cpu")
    step = fabric.load(path)["step"] if os.path.exists(path) else 0  # resume, as a training script would
    with open(log, "a") as out:
        out.write(f"START {step}\n")
        out.flush()
        for _ in range(100000):
            step += 1
            state = {
                "step": step,
                "weights": torch.full((NUMEL,), float(step)),
                "optimizer": {"moments": torch.full((NUMEL,), -float(step)), "step": step},
            }
            fabric.save(path, state)
            out.write(f"SAVED {step}\n")
            out.flush()
            if once:
                break

if __name__ == "__main__":
    folder = sys.argv[1]
    print("ZYGOTE READY", flush=True)
    for line in sys.stdin:
        command, name = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                writer(os.path.join(folder, "ckpt.pt"), os.path.join(folder, name), once=command == "once")
            finally:
                os._exit(0)
        print(f"CHILD {name} {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"REAPED {name} {os.waitstatus_to_exitcode(status)}", flush=True)
"""


@dataclass
class Campaign:
    kills: int = 0
    mid_write: int = 0  # kills that left a temporary file behind (the writer was inside atomic_write)
    checked_loads: int = 0
    steps: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stale_after_clean_save: list[str] = field(default_factory=list)
    clean_writer_pid: int = 0
    seed: int = 0
    folder: Path | None = None


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_MARKER))


def _check_checkpoint(path: Path, completed: int, round_no: int) -> tuple[int | None, str | None]:
    """The checkpoint must load and hold step ``completed`` or ``completed + 1``, consistently."""
    try:
        data = TorchCheckpointIO().load_checkpoint(path)
    except Exception as err:  # any failure to load is exactly what this test looks for
        return None, f"round {round_no}: the last checkpoint does not load: {type(err).__name__}: {err}"
    step = data.get("step")
    if step not in (completed, completed + 1):
        return step, f"round {round_no}: checkpoint holds step {step}, but the writer had completed {completed}"
    if not (
        torch.equal(data["weights"], torch.full((NUMEL,), float(step)))
        and torch.equal(data["optimizer"]["moments"], torch.full((NUMEL,), -float(step)))
        and data["optimizer"]["step"] == step
    ):
        return step, f"round {round_no}: checkpoint of step {step} holds data of another step"
    return step, None


def _wait_line(job, pattern: str, path: Path | None = None, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        ended = job.proc.poll() is not None  # before reading: its last lines are then in the file
        text = path.read_text() if path is not None and path.exists() else (job.stdout if path is None else "")
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found
        if ended or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    job.kill_all()
    pytest.fail(f"no line matching {pattern!r}\nzygote stdout:\n{job.stdout}\nstderr:\n{job.stderr[-4000:]}")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Campaign:
    folder = tmp_path_factory.mktemp("save_kill")
    script = folder / "zygote.py"
    script.write_text(ZYGOTE)
    result = Campaign(seed=random.randrange(2**32), folder=folder)
    rng = random.Random(result.seed)
    job = start_job(folder, [sys.executable, str(script), str(folder), str(NUMEL)], name="zygote", stdin=True)
    try:
        _wait_line(job, r"^ZYGOTE READY")
        ckpt = folder / "ckpt.pt"
        for round_no in range(KILLS):
            log = folder / f"round{round_no}.log"
            job.proc.stdin.write(f"loop round{round_no}.log\n".encode())
            job.proc.stdin.flush()
            pid = int(_wait_line(job, rf"^CHILD round{round_no}\.log (\d+)$")[1])
            # the first round waits for one finished save, so that there is a checkpoint to protect
            _wait_line(job, r"^SAVED 1$" if round_no == 0 else r"^START", path=log)
            time.sleep(rng.uniform(0, MAX_DELAY))
            os.kill(pid, signal.SIGKILL)
            _wait_line(job, rf"^REAPED round{round_no}\.log -9$")
            result.kills += 1
            lines = log.read_text().split()
            numbers = [int(n) for n in lines[1::2]]  # START s, SAVED s+1, SAVED s+2 ...
            completed = numbers[-1]
            if [name for name in _temp_files(folder) if f".{pid}." in name]:
                result.mid_write += 1  # this writer died between creating its temporary file and os.replace
            step, problem = _check_checkpoint(ckpt, completed, round_no)
            result.checked_loads += 1
            result.steps.append(step if step is not None else -1)
            if problem:
                result.problems.append(problem)
        # one more writer saves once and exits normally
        job.proc.stdin.write(b"once final.log\n")
        job.proc.stdin.flush()
        result.clean_writer_pid = int(_wait_line(job, r"^CHILD final\.log (\d+)$")[1])
        _wait_line(job, r"^REAPED final\.log 0$")
        result.stale_after_clean_save = _temp_files(folder)
        print(
            f"\n[faults] save-kill campaign: seed {result.seed}, {result.kills} SIGKILLs, {result.mid_write} inside "
            f"a save, steps reached {result.steps[-1] if result.steps else None}, "
            f"{len(result.stale_after_clean_save)} stale temporary files after a clean save"
        )
    finally:
        job.proc.stdin.close()
        job.proc.wait(timeout=60)
        job.kill_all()
    return result


def test_sigkill_during_save_never_damages_the_last_checkpoint(campaign):
    assert campaign.kills == KILLS
    assert campaign.checked_loads == KILLS
    assert not campaign.problems, f"seed {campaign.seed}: " + "\n".join(campaign.problems)
    # the kills did land inside saves (a temporary file was on disk), so the test exercised the risk
    assert campaign.mid_write >= 1, f"seed {campaign.seed}: no kill landed inside a save"
    # steps never went backwards across rounds: each writer resumed from what the last one left
    assert campaign.steps == sorted(campaign.steps), campaign.steps


def test_final_checkpoint_loads_with_fabric(campaign):
    from fabric_core import Fabric

    loaded = Fabric(accelerator="cpu").load(campaign.folder / "ckpt.pt")
    assert loaded["step"] == campaign.steps[-1] + 1  # the clean writer resumed and saved one more
    assert torch.equal(loaded["weights"], torch.full((NUMEL,), float(loaded["step"])))
    # the writer that finished cleanly left no temporary file of its own
    assert not [name for name in campaign.stale_after_clean_save if f".{campaign.clean_writer_pid}." in name]


def test_successful_save_removes_temp_files_of_killed_writers(campaign):
    assert campaign.mid_write >= 1
    assert campaign.stale_after_clean_save == [], campaign.stale_after_clean_save
