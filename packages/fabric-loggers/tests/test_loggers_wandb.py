"""WandbLogger against the real wandb in offline mode, read back from W&B's own run files."""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("wandb", reason='the trackers session installs it: pip install "fabric-loggers[wandb]"')
from fabric_loggers import WandbLogger
from loggers_testing import user_metrics, wandb_offline_run

# generous: MLflow creates its tables and every tracker starts helper processes; the machine may be loaded 10x
pytestmark = [pytest.mark.trackers, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network: W&B writes its run files locally (WANDB_MODE=offline), quietly, and keeps its cache here."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))


def test_metrics_steps_and_config_read_back_exactly(tmp_path):
    logger = WandbLogger(project="exact", name="first", save_dir=tmp_path, prefix="train")
    logger.log_hyperparams(argparse.Namespace(lr=0.1, model={"depth": 4, "act": None}, flag=True))
    logger.log_metrics({"loss": 1 / 3})
    logger.log_metrics({"loss": 0.25, "acc": torch.tensor(0.5)})
    logger.log_metrics({"loss": 1e-300}, step=10)
    logger.log_metrics({"loss": 2.0})
    run_id = logger.version
    logger.finalize("success")

    run = wandb_offline_run(str(tmp_path), run_id)
    assert run["runs"] == 1
    assert [(step, user_metrics(values)) for step, values in run["history"]] == [
        (0, {"train-loss": 1 / 3}),
        (1, {"train-loss": 0.25, "train-acc": 0.5}),
        (10, {"train-loss": 1e-300}),
        (11, {"train-loss": 2.0}),
    ]
    config = {key: value for key, value in run["config"].items() if not key.startswith("_")}
    assert config == {"lr": 0.1, "model/depth": 4, "model/act": "None", "flag": True}
    assert run["exit_code"] == 0


def test_resume_by_id_continues_the_steps(tmp_path):
    first = WandbLogger(project="resume", save_dir=tmp_path, id="fabricresume1")
    first.log_metrics({"loss": 3.0})
    first.log_metrics({"loss": 2.0})
    first.finalize("failed")
    assert wandb_offline_run(str(tmp_path), "fabricresume1")["exit_code"] == 1

    resumed = WandbLogger(project="resume", save_dir=tmp_path, id="fabricresume1")
    resumed.log_metrics({"loss": 1.0}, step=2)
    resumed.finalize("success")
    run = wandb_offline_run(str(tmp_path), "fabricresume1", exits=2)
    assert [(step, user_metrics(values)) for step, values in run["history"]] == [
        (0, {"loss": 3.0}),
        (1, {"loss": 2.0}),
        (2, {"loss": 1.0}),
    ]


def test_experiment_is_the_run_and_a_no_op_on_other_ranks(tmp_path):
    logger = WandbLogger(project="native", save_dir=tmp_path)
    logger.experiment.log({"direct": 1.0}, step=0)  # the wandb.Run itself
    assert logger.experiment.id == logger.version
    logger.finalize("success")
    run = wandb_offline_run(str(tmp_path), logger.version)
    assert [user_metrics(values) for _, values in run["history"]] == [{"direct": 1.0}]

    other = WandbLogger(project="native", save_dir=tmp_path / "other")
    other.set_global_rank(1)
    other.log_metrics({"x": 1.0})
    other.experiment.log({"x": 1.0})
    other.finalize("success")
    assert other.version is None
    assert not (tmp_path / "other").exists()


def test_checkpoints_from_fabric_save_become_a_model_artifact(tmp_path):
    from fabric_core import Fabric

    logger = WandbLogger(project="ckpt", save_dir=tmp_path, log_checkpoints=True)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    model = fabric.setup(torch.nn.Linear(2, 1))
    fabric.save(tmp_path / "step-1.ckpt", {"model": model})
    run_id = logger.version
    logger.finalize("success")
    from loggers_testing import read_wandb_run_file

    wandb_offline_run(str(tmp_path), run_id)  # waits for W&B to finish writing
    (path,) = glob.glob(os.path.join(tmp_path, "wandb", f"offline-run-*-{run_id}", f"run-{run_id}.wandb"))
    artifacts = [r.artifact for r in read_wandb_run_file(path) if r.WhichOneof("record_type") == "artifact"]
    assert [(a.type, a.name) for a in artifacts] == [("model", f"model-{run_id}")]
    assert [entry.path for entry in artifacts[0].manifest.contents] == ["step-1.ckpt"]


_CRASH = """
import sys
sys.path.insert(0, sys.argv[3])
from fabric_loggers import WandbLogger
from loggers_testing import wait_for, wandb_offline_run
logger = WandbLogger(project="crash", save_dir=sys.argv[1], id="fabriccrash1")
logger.log_metrics({"loss": 1.0})
logger.log_metrics({"loss": 0.5})  # commits step 0's row (W&B keeps a step open until the next one)
if sys.argv[2] == "raise":
    raise RuntimeError("the training loop failed")
run = lambda: wandb_offline_run(sys.argv[1], "fabriccrash1", finished=False)
wait_for(lambda: run()["history"], 120, "step 0 on disk")
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_a_crashed_process_leaves_a_run_file_wandb_reads(tmp_path, how):
    tests = os.path.dirname(__file__)
    result = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path), how, tests], capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    run = wandb_offline_run(str(tmp_path), "fabriccrash1", finished=how == "raise")
    history = [(step, user_metrics(values)) for step, values in run["history"]]
    if how == "raise":  # the exception ends the run at interpreter exit: last step committed, exit code 1
        assert history == [(0, {"loss": 1.0}), (1, {"loss": 0.5})]
        assert run["exit_code"] == 1
    else:  # SIGKILL: every committed step is readable; the open step and the exit record are lost
        assert history == [(0, {"loss": 1.0})]
        assert run["exit_code"] is None


def test_missing_wandb_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fabric-loggers\[wandb\]"'):
        WandbLogger(save_dir=tmp_path).log_metrics({"x": 1.0})
