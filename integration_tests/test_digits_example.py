"""The digits example, run the ways a user runs it: one process, `fabric run`, torchrun, with loggers."""

from __future__ import annotations

import csv
import re

import pytest
import torch

from conftest import EXAMPLE, PYTHON

pytestmark = pytest.mark.multiprocess


def _accuracy(stdout: str) -> float:
    match = re.search(r"final test accuracy ([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


def _epoch_lines(stdout: str) -> list[tuple[float, float]]:
    """(mean train loss, train accuracy) of each epoch line the example printed."""
    found = re.findall(r"^epoch \d+/\d+  train loss ([0-9.]+)  train accuracy ([0-9.]+)  test accuracy", stdout, re.M)
    return [(float(loss), float(acc)) for loss, acc in found]


def test_single_process_reaches_good_accuracy_and_saves_a_checkpoint(runner, tmp_path):
    proc = runner(PYTHON, EXAMPLE, "--epochs", "6", "--checkpoint", str(tmp_path / "digits.pt"))
    assert proc.returncode == 0, proc.stderr
    assert _accuracy(proc.stdout) >= 0.9
    epochs = _epoch_lines(proc.stdout)
    # Not a terminal: one summary line per epoch and no progress lines; the epoch's mean loss falls steadily.
    assert len(epochs) == 6, proc.stdout
    assert "it/s" not in proc.stdout + proc.stderr
    losses = [loss for loss, _ in epochs]
    assert losses == sorted(losses, reverse=True), losses
    assert epochs[-1][1] >= 0.9
    saved = torch.load(tmp_path / "digits.pt", weights_only=True)
    assert saved["step"] > 0 and "0.weight" in saved["model"]


def test_fabric_run_two_processes(runner):
    proc = runner(
        PYTHON, "-m", "fabric_core.cli", "run", "--devices", "2", "--accelerator", "cpu", EXAMPLE, "--epochs", "4"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert _accuracy(proc.stdout) >= 0.85
    assert len(_epoch_lines(proc.stdout)) == 4, proc.stdout  # rank zero prints, once per epoch


def test_progress_bar_in_a_terminal(tmp_path):
    """With a terminal on stderr, rank zero draws tqdm's bar over each epoch's batches."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(
        terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0)
    )  # a new pty is 0x0: tqdm draws nothing
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [PYTHON, EXAMPLE, "--epochs", "1"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=terminal, text=True, env=env
    )
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    stdout = proc.communicate(timeout=600)[0]
    os.close(controller)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    assert _accuracy(stdout) > 0.5
    assert b"epoch 1/1:" in drawn and b"it/s" in drawn, drawn.decode(errors="replace")


def test_torchrun_two_processes(runner):
    proc = runner(PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", EXAMPLE, "--epochs", "4")
    assert proc.returncode == 0, proc.stderr
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert _accuracy(proc.stdout) >= 0.85


def test_bf16_mixed_on_cpu(runner):
    proc = runner(PYTHON, EXAMPLE, "--epochs", "4", "--precision", "bf16-mixed")
    assert proc.returncode == 0, proc.stderr
    assert _accuracy(proc.stdout) >= 0.85


def test_csv_logger_option(runner, tmp_path):
    proc = runner(PYTHON, EXAMPLE, "--epochs", "2", "--logger", "csv", "--log-dir", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stderr
    files = list((tmp_path / "logs").rglob("metrics.csv"))
    assert len(files) == 1
    rows = list(csv.DictReader(files[0].open()))
    assert any(row.get("test/accuracy") for row in rows) and any(row.get("train/loss") for row in rows)


def test_tensorboard_logger_option(runner, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = runner(PYTHON, EXAMPLE, "--epochs", "2", "--logger", "tensorboard", "--log-dir", str(tmp_path / "logs"))
    assert proc.returncode == 0, proc.stderr
    run_dir = next(p.parent for p in (tmp_path / "logs").rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir))
    events.Reload()
    accuracy = events.Scalars("test/accuracy")
    assert len(accuracy) == 2 and accuracy[-1].value > 0.5
