"""TensorBoard and CSV under SIGTERM (how torch's spawn, torchrun, fabric's launchers and SLURM stop the ranks
that are still running) and at a normal exit without ``finalize``: every step logged before is on disk, read
back with TensorBoard's EventAccumulator and the csv module, and the process still dies by SIGTERM.
Real processes throughout; the signal is sent from outside, at rest or in the middle of writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from fabric_loggers import CSVLogger, TensorBoardLogger
from loggers_testing import event_accumulator, read_csv, scalars

pytestmark = [
    pytest.mark.timeout(900),  # each test starts processes; the machine may be loaded 10x
    pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX"),
]

# Logs N steps to both loggers with the default schedule (a flush every 100 steps), then waits: N not a
# multiple of 100 leaves rows only in memory. "exit" returns without finalize; "term" waits for SIGTERM.
_LOG_THEN_WAIT = """
import sys, time
from fabric_loggers import CSVLogger, TensorBoardLogger
root, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
loggers = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb")]
for step in range(n):
    for logger in loggers:
        logger.log_metrics({"loss": step * 0.5, "acc": step / n}, step=step)
if mode == "term":
    print("READY", flush=True)
    time.sleep(600)
"""

# Logs without pause and says which step each call finished; SIGTERM lands anywhere: inside add_scalar
# (TensorBoard's writer lock held, its queue full), inside a CSV append or a header rewrite (a new column
# every 37 steps), in between. "direct" logs through the SummaryWriter itself (``logger.experiment``).
_LOG_FOREVER = """
import sys
from fabric_loggers import CSVLogger, TensorBoardLogger
root, mode = sys.argv[1], sys.argv[2]
if mode == "direct":
    logger = TensorBoardLogger(root, name="tb")
    writer = logger.experiment
    step = 0
    while True:
        writer.add_scalar("v", step * 0.5, global_step=step)
        print(step, flush=True)
        step += 1
loggers = [CSVLogger(root, name="csv", flush_logs_every_n_steps=7), TensorBoardLogger(root, name="tb")]
step = 0
while True:
    metrics = {"v": step * 0.5}
    if step % 37 == 0:
        metrics[f"c{step // 37}"] = step
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
    print(step, flush=True)
    step += 1
"""


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _read_line(process: subprocess.Popen) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=300)
    if not line or not line[0]:
        process.kill()
        pytest.fail(f"the child wrote nothing: {process.stderr.read()[-3000:]}")
    return line[0]


def _terminate(process: subprocess.Popen) -> str:
    """SIGTERM, then wait for the end (a hang guard, not a timing); return the rest of stdout.

    The rest is read through ``process.stdout`` itself: ``_read_line`` leaves lines in its buffer, which
    ``communicate`` (reading the pipe directly) would skip."""
    process.send_signal(signal.SIGTERM)
    streams: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda name=name: streams.update({name: getattr(process, name).read()}), daemon=True)
        for name in ("stdout", "stderr")
    ]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the process did not end within 300 s of SIGTERM")
    for reader in readers:
        reader.join(timeout=300)
    assert process.returncode == -signal.SIGTERM, streams.get("stderr", "")[-3000:]  # launchers see the usual status
    return streams["stdout"]


def _log_then_terminate(process: subprocess.Popen, past: int) -> int:
    """Let the child log past step ``past``, SIGTERM it, and return the last step whose call had returned.

    The signal may land before the child prints again (then it is the step read last) or in the middle of a
    print (a partial last line is a step still in progress)."""
    step = int(_read_line(process))
    while step < past:
        step = int(_read_line(process))
    rest = _terminate(process)
    finished = rest.splitlines() if rest.endswith("\n") else rest.splitlines()[:-1]
    return int(finished[-1]) if finished else step


def _csv_steps(root: str) -> list[int]:
    header, rows = read_csv(os.path.join(root, "csv", "version_0", "metrics.csv"))
    assert all(float(row["v"]) == int(row["step"]) * 0.5 for row in rows)
    for column in (name for name in header if name.startswith("c")):  # each grown column: its one value
        assert [row[column] for row in rows if row[column]] == [str(int(column[1:]) * 37)]
    return [int(row["step"]) for row in rows]


def _tb_steps(root: str) -> list[int]:
    events = event_accumulator(os.path.join(root, "tb", "version_0")).Scalars("v")
    assert all(event.value == event.step * 0.5 for event in events)
    return [event.step for event in events]


@pytest.mark.parametrize("mode", ["term", "exit"])
def test_every_step_is_on_disk_after_sigterm_or_exit_without_finalize(tmp_path, mode):
    n = 250  # 2 scheduled flushes; 50 steps only in memory when the process ends
    process = _start(_LOG_THEN_WAIT, str(tmp_path), str(n), mode)
    if mode == "term":
        assert _read_line(process) == "READY\n"
        _terminate(process)
    else:
        _, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors[-3000:]
    header, rows = read_csv(str(tmp_path / "csv" / "version_0" / "metrics.csv"))
    assert header == ["acc", "loss", "step"]
    assert [(int(r["step"]), float(r["loss"]), float(r["acc"])) for r in rows] == [
        (step, step * 0.5, step / n) for step in range(n)
    ]
    log_dir = str(tmp_path / "tb" / "version_0")
    assert scalars(log_dir, "loss") == [(step, step * 0.5) for step in range(n)]
    assert [step for step, _ in scalars(log_dir, "acc")] == list(range(n))


def test_sigterm_in_the_middle_of_writes_keeps_whole_files_and_every_finished_step(tmp_path):
    process = _start(_LOG_FOREVER, str(tmp_path), "logger")
    last = _log_then_terminate(process, past=300)  # past a few flushes and header rewrites
    for steps in (_csv_steps(str(tmp_path)), _tb_steps(str(tmp_path))):
        # Every step whose call returned before the signal, once each, in order; perhaps the one in progress.
        assert steps[: last + 1] == list(range(last + 1))
        assert len(steps) in (last + 1, last + 2)
        assert steps == sorted(set(steps))


def test_sigterm_during_the_users_own_summary_writer_calls_still_ends_the_process(tmp_path):
    """The signal may interrupt ``logger.experiment.add_scalar`` while it holds the writer's lock: the flush
    must not wait on it forever. The events TensorBoard's thread had queued are on disk."""
    process = _start(_LOG_FOREVER, str(tmp_path), "direct")
    last = _log_then_terminate(process, past=300)
    steps = _tb_steps(str(tmp_path))
    assert steps[: last + 1] == list(range(last + 1))
    assert len(steps) in (last + 1, last + 2)


@pytest.mark.parametrize("cls", [CSVLogger, TensorBoardLogger])
def test_the_sigterm_handler_is_the_previous_one_again_after_finalize(tmp_path, cls):
    def previous(signum, frame):  # pragma: no cover - never called
        raise AssertionError("not expected to run")

    before = signal.signal(signal.SIGTERM, previous)
    try:
        logger = cls(tmp_path)
        logger.log_metrics({"v": 1.0}, step=0)
        installed = signal.getsignal(signal.SIGTERM)
        assert installed is not previous  # the logger's, in front
        logger.finalize("success")
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before)


_RANK_ONE_DIES = """
import os, signal, sys, time
import torch
from fabric_core import Fabric
from fabric_loggers import CSVLogger, TensorBoardLogger

def train(fabric, root):
    model = fabric.setup(torch.nn.Linear(2, 1))
    ledger = os.open(os.path.join(root, "ledger"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    step = 0
    while True:  # rank 0 ends when the launcher stops it (SIGTERM), or when its all-reduce loses rank 1
        if step == 3 and fabric.global_rank == 1:
            while open(os.path.join(root, "ledger"), "rb").read().count(b"\\n") < 3:  # rank 0 logged step 2
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        fabric.backward(model(torch.ones(4, 2)).sum())
        fabric.log_dict({"v": step * 0.5})
        if fabric.global_rank == 0:
            os.write(ledger, b"%d\\n" % step)  # what rank 0 has logged, unbuffered
        step += 1

if __name__ == "__main__":
    root, strategy = sys.argv[1], sys.argv[2]
    loggers = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb")]
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=2, loggers=loggers)
    if strategy == "ddp_spawn":
        fabric.launch(train, root)
    else:
        fabric.launch()
        train(fabric, root)
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("launcher", ["ddp_spawn", "script", "torchrun"])
def test_rank_zero_keeps_every_step_when_another_rank_dies(tmp_path, launcher):
    """Rank 1 is SIGKILLed once rank 0 has logged 3 steps; rank 0 goes on logging until the launcher stops it
    (SIGTERM: torch's spawn, fabric's script launcher, torchrun) or its collective fails: every step rank 0
    logged (its ledger) is in both files."""
    script = tmp_path / "train.py"
    script.write_text(_RANK_ONE_DIES)
    if launcher == "torchrun":  # standalone: a local rendezvous on a free port
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        command += [str(script), str(tmp_path), "ddp"]
    else:
        command = [sys.executable, str(script), str(tmp_path), "ddp_spawn" if launcher == "ddp_spawn" else "ddp"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode != 0
    logged = [int(line) for line in (tmp_path / "ledger").read_text().split()]
    assert logged == list(range(len(logged))) and len(logged) >= 3, result.stderr[-3000:]
    for steps in (_csv_steps(str(tmp_path)), _tb_steps(str(tmp_path))):
        assert steps[: len(logged)] == logged, result.stderr[-3000:]
        assert len(steps) in (len(logged), len(logged) + 1)  # perhaps the step logged but not yet in the ledger
