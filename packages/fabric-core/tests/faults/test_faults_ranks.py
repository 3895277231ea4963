"""A rank that raises, hangs in a collective, or is SIGKILLed takes the whole job down, under every launcher.

For each case: the job ends (bounded by the collective timeout plus a margin, never by the
60 s the healthy ranks would keep running), the launcher exits non-zero, the summary names the
rank that failed first and how it ended, and no process of the job is left behind.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from fault_helpers import LAUNCHERS, fabric_lines, start_job, still_alive, write_script

COLLECTIVE_TIMEOUT = 10  # seconds; FABRIC_COLLECTIVE_TIMEOUT for every job here
END_MARGIN = 90  # seconds a job may take to wind down after the fault (a loaded 2-core machine)

WORKER = r"""
import os, sys, time
import torch

def work(fabric, fault, target):
    rank = fabric.global_rank
    say(f"PID {rank} {os.getpid()}")
    fabric.barrier()
    say(f"READY {rank}")
    if rank == target and fault == "raise":
        raise ValueError(f"rank {rank} failed on purpose")
    if rank == target and fault == "exit":
        os._exit(3)
    if fault == "raise_while_busy":
        if rank == target:
            raise ValueError(f"rank {rank} failed on purpose")
        try:
            time.sleep(120)  # computing, saving, ...: no collective that would notice the failure
        finally:
            say(f"CLEANUP {rank}")
    if rank == target and fault == "hang":
        time.sleep(600)  # the others wait for it in all_reduce until the collective timeout
    # everyone else (and every rank when the test kills one) keeps talking, for at most ~60 s
    for _ in range(1200):
        fabric.all_reduce(torch.ones(1))
        time.sleep(0.05)
    say(f"DONE {rank}")

if __name__ == "__main__":
    launcher, fault, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run_job(launcher, work, fault, target)
"""

# What the summary must say, per launcher, for the rank that failed first. `fabric run` and
# Fabric's own launchers print "[fabric] rank N ..."; plain torchrun prints torch's own report, whose
# "Root Cause (first observed failure)" section is what these patterns are matched against.
RAISED = {
    "ddp": r"\[fabric\] rank 1 (exited with code 1|raised ValueError)",
    "ddp_spawn": r"rank 1 raised an exception",
    "fabric_run": r"\[fabric\] rank 1 (exited with code 1|raised ValueError)",
    "torchrun": r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*1 ",
}
KILLED = {
    "ddp": r"\[fabric\] rank 1 was killed by SIGKILL",
    "ddp_spawn": r"rank 1 was killed by SIGKILL",
    "fabric_run": r"\[fabric\] rank 1 was killed by SIGKILL",
    "torchrun": r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*-9",
}
# A hang shows as the waiting rank's collective timing out.
TIMED_OUT = {
    "ddp": r"\[fabric\] rank 0 raised",
    "ddp_spawn": r"rank 0 raised an exception",
    "fabric_run": r"\[fabric\] rank 0 (exited with code 1|raised RuntimeError)",
    "torchrun": r"rank\s*:\s*0 \(local_rank: 0\)\s+exitcode\s*:\s*1",
}


def _run_fault(tmp_path, launcher: str, fault: str, target: int = 1, kill: str = "rank", options: tuple[str, ...] = ()):
    script = write_script(tmp_path, WORKER)
    command = LAUNCHERS[launcher](script)
    command[-2:-2] = options  # before the script and its launcher argument
    job = start_job(
        tmp_path,
        [*command, fault, str(target)],
        env={"FABRIC_COLLECTIVE_TIMEOUT": str(COLLECTIVE_TIMEOUT)},
    )
    job.wait_for_output(r"READY \d", count=2)
    pids = job.rank_pids()
    assert sorted(pids) == [0, 1], job.stdout
    if fault == "kill":
        victim = pids[target] if kill == "rank" else job.proc.pid
        os.kill(victim, signal.SIGKILL)
    timeout = END_MARGIN + (COLLECTIVE_TIMEOUT if fault == "hang" else 0)
    code = job.finish(timeout=timeout)
    leftovers = job.leftovers()
    return job, code, pids, leftovers


def _assert_job_down(job, code, pids, leftovers, launcher_killed: bool = False) -> None:
    if launcher_killed:
        assert code == -signal.SIGKILL
    else:
        assert code != 0, job.stderr
    assert not leftovers, f"processes of the job still running after it ended: {leftovers}\n{job.stderr[-4000:]}"
    assert not still_alive(list(pids.values())), f"a rank outlived the job: {pids}"
    assert "DONE" not in job.stdout  # no rank carried on to the end of its loop


def _assert_reported(job, launcher: str, patterns: dict[str, str]) -> None:
    """The report names the rank that failed first (launchers/failures.first_failure; under plain torchrun,
    torch's own "Root Cause", which a rank that only lost its peer leaves to the rank that failed)."""
    text = job.stderr
    if launcher == "torchrun":
        assert "Root Cause (first observed failure)" in text, text[-4000:]
        text = text.split("Root Cause (first observed failure)", 1)[1]
    assert re.search(patterns[launcher], text), f"the report does not name the rank that failed first:\n{text[-4000:]}"


def _no_self_inflicted_sigterm(job, launcher: str) -> None:
    """The test only sends SIGKILL: a reported SIGTERM is the launcher's own clean-up blamed on a rank."""
    if launcher == "torchrun":
        return  # torch's own report; not Fabric's wording
    lines = fabric_lines(job.stderr)
    assert not [line for line in lines if "SIGTERM" in line], lines


@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn", "fabric_run", "torchrun"])
def test_rank_that_raises(tmp_path, launcher):
    job, code, pids, leftovers = _run_fault(tmp_path, launcher, "raise")
    _assert_job_down(job, code, pids, leftovers)
    assert "ValueError: rank 1 failed on purpose" in job.stderr  # the rank's own traceback is shown
    _assert_reported(job, launcher, RAISED)
    _no_self_inflicted_sigterm(job, launcher)
    if launcher in ("ddp", "fabric_run"):
        assert "rank 1" in fabric_lines(job.stderr)[0], "the first summary line names the rank that failed first"


@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn", "fabric_run", "torchrun"])
def test_rank_killed_by_sigkill(tmp_path, launcher):
    job, code, pids, leftovers = _run_fault(tmp_path, launcher, "kill")
    _assert_job_down(job, code, pids, leftovers)
    _assert_reported(job, launcher, KILLED)
    _no_self_inflicted_sigterm(job, launcher)
    if launcher == "fabric_run":
        assert "rank 1" in fabric_lines(job.stderr)[0], "the first summary line names the rank that failed first"


def test_torchrun_names_the_killed_rank_when_its_agent_polls_slowly(tmp_path):
    """torch's report blames the lowest rank when two failures are seen in one poll (whole-second timestamps).

    Rank 0's collective fails a moment after rank 1 is killed; with the agent polling every few seconds both
    used to end before the next poll, and rank 0 was named. A rank that only lost its peer now waits for the
    agent to stop it (launchers/failures.FailureRecorder), so the poll sees rank 1 alone. 3 s: slow enough to
    see both failures in one poll before the fix, well inside the rank's 10 s wait on a loaded machine.
    """
    job, code, pids, leftovers = _run_fault(tmp_path, "torchrun", "kill", options=("--monitor-interval=3",))
    _assert_job_down(job, code, pids, leftovers)
    _assert_reported(job, "torchrun", KILLED)


@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn", "fabric_run", "torchrun"])
def test_rank_that_hangs_in_a_collective(tmp_path, launcher):
    """Rank 1 sleeps while rank 0 waits in all_reduce: FABRIC_COLLECTIVE_TIMEOUT ends the job."""
    job, code, pids, leftovers = _run_fault(tmp_path, launcher, "hang")
    _assert_job_down(job, code, pids, leftovers)
    assert f"Timed out waiting {COLLECTIVE_TIMEOUT * 1000}ms" in job.stderr, job.stderr[-4000:]
    _assert_reported(job, launcher, TIMED_OUT)
    _no_self_inflicted_sigterm(job, launcher)


@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn"])
def test_rank_that_exits_with_a_code(tmp_path, launcher):
    """os._exit(3) in rank 1: no traceback anywhere, so the summary is all the user gets."""
    job, code, pids, leftovers = _run_fault(tmp_path, launcher, "exit")
    _assert_job_down(job, code, pids, leftovers)
    _assert_reported(job, launcher, {launcher: r"rank 1 exited with code 3"})
    _no_self_inflicted_sigterm(job, launcher)


def test_rank_zero_busy_outside_collectives_is_interrupted_not_killed(tmp_path):
    """strategy="ddp": rank 0 runs the launcher's watchdog. When rank 1 fails while rank 0 is busy outside any
    collective, rank 0 is interrupted as by Ctrl-C, so its ``finally`` blocks and exit hooks still run."""
    job, code, pids, leftovers = _run_fault(tmp_path, "ddp", "raise_while_busy")
    _assert_job_down(job, code, pids, leftovers)
    assert code == 1, job.stderr[-4000:]
    _assert_reported(job, "ddp", RAISED)
    assert "CLEANUP 0" in job.stdout, job.stderr[-4000:]
    assert "KeyboardInterrupt" in job.stderr


# for "ddp" the launcher is rank 0 itself: the worker must die with it (PDEATHSIG)
@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn", "fabric_run", "torchrun"])
def test_launcher_killed_by_sigkill_leaves_no_workers(tmp_path, launcher):
    job, code, pids, leftovers = _run_fault(tmp_path, launcher, "kill", kill="launcher")
    _assert_job_down(job, code, pids, leftovers, launcher_killed=True)


INTERRUPTED = """
import os, sys, time, torch

def work(fabric):
    say(f"PID {fabric.global_rank} {os.getpid()}")
    fabric.barrier()
    say(f"READY {fabric.global_rank}")
    for _ in range(1200):  # ~60 s of training (well past any delay in noticing READY), unless the interrupt stops it
        fabric.all_reduce(torch.ones(1))
        time.sleep(0.05)
    say(f"FINISHED {fabric.global_rank}")

if __name__ == "__main__":
    run_job(sys.argv[1], work)
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("launcher", ["ddp", "ddp_spawn", "fabric_run"])
def test_interrupting_the_launcher_stops_the_workers(tmp_path, launcher, signal_name):
    """SIGINT/SIGTERM aimed at the launching process only (``kill``, a scheduler): the whole job stops."""
    job = start_job(tmp_path, [*LAUNCHERS[launcher](write_script(tmp_path, INTERRUPTED))])
    job.wait_for_output(r"READY \d", count=2)
    os.kill(job.proc.pid, getattr(signal, signal_name))
    code = job.finish(timeout=120)
    assert code != 0
    assert "FINISHED" not in job.stdout, "the workers went on training after the interrupt"
    assert not job.leftovers()
