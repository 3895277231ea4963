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


def test_single_process_reaches_good_accuracy_and_saves_a_checkpoint(runner, tmp_path):
    proc = runner(PYTHON, EXAMPLE, "--epochs", "6", "--checkpoint", str(tmp_path / "digits.pt"))
    assert proc.returncode == 0, proc.stderr
    assert _accuracy(proc.stdout) >= 0.9
    assert "epoch 1/6" in proc.stdout
    saved = torch.load(tmp_path / "digits.pt", weights_only=True)
    assert saved["step"] > 0 and "0.weight" in saved["model"]


def test_fabric_run_two_processes(runner):
    proc = runner(
        PYTHON, "-m", "fabric_core.cli", "run", "--devices", "2", "--accelerator", "cpu", EXAMPLE, "--epochs", "4"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Training on 2 process(es), ddp" in proc.stdout
    assert _accuracy(proc.stdout) >= 0.85


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
