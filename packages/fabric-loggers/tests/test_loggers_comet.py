"""CometLogger against the real comet_ml in offline mode, read back from Comet's offline archives."""

from __future__ import annotations

import argparse

import pytest
import torch

pytest.importorskip("comet_ml", reason='the trackers session installs it: pip install "fabric-loggers[comet]"')
from fabric_loggers import CometLogger
from loggers_testing import comet_offline_archives

# generous: MLflow creates its tables and every tracker starts helper processes; the machine may be loaded 10x
pytestmark = [pytest.mark.trackers, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no-comet-config"))
    monkeypatch.delenv("COMET_API_KEY", raising=False)


def test_metrics_steps_and_params_read_back_exactly(tmp_path):
    logger = CometLogger(project_name="exact", experiment_name="first", offline=True, save_dir=tmp_path, prefix="train")
    logger.log_hyperparams(argparse.Namespace(lr=0.1, model={"depth": 4, "act": None}, flag=True))
    logger.log_metrics({"loss": 1 / 3})
    logger.log_metrics({"loss": 0.25, "acc": torch.tensor(0.5)})
    logger.log_metrics({"loss": 1e-300}, step=10)
    logger.log_metrics({"loss": 2.0})
    key = logger.version
    logger.finalize("success")

    (archive,) = comet_offline_archives(str(tmp_path))
    assert archive["experiment"]["offline_id"] == key
    assert archive["experiment"]["project_name"] == "exact"
    assert sorted(m for m in archive["metrics"] if m[1].startswith("train-")) == [
        (0, "train-loss", 1 / 3),
        (1, "train-acc", 0.5),
        (1, "train-loss", 0.25),
        (10, "train-loss", 1e-300),
        (11, "train-loss", 2.0),
    ]
    assert archive["params"] == {"lr": 0.1, "model/depth": 4, "model/act": "None", "flag": True}
    assert archive["others"]["status"] == "success"
    assert archive["others"]["Name"] == "first"


def test_resume_by_experiment_key(tmp_path):
    first = CometLogger(project_name="resume", offline=True, save_dir=tmp_path)
    first.log_metrics({"loss": 3.0})
    key = first.version
    first.finalize("failed")
    resumed = CometLogger(project_name="resume", offline=True, save_dir=tmp_path, experiment_key=key)
    resumed.log_metrics({"loss": 1.0}, step=1)
    resumed.finalize("success")
    archives = comet_offline_archives(str(tmp_path))
    assert [a["experiment"]["offline_id"] for a in archives] == [key, key]
    assert archives[1]["experiment"]["resume_strategy"] != "create"
    assert [(a["others"]["status"], [m for m in a["metrics"] if m[1] == "loss"]) for a in archives] == [
        ("failed", [(0, "loss", 3.0)]),
        ("success", [(1, "loss", 1.0)]),
    ]


def test_checkpoint_from_fabric_save_is_logged_as_a_model(tmp_path):
    from fabric_core import Fabric

    logger = CometLogger(offline=True, save_dir=tmp_path / "comet", log_checkpoints=True)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    model = fabric.setup(torch.nn.Linear(2, 1))
    fabric.save(tmp_path / "step-1.ckpt", {"model": model})
    logger.finalize("success")
    (archive,) = comet_offline_archives(str(tmp_path / "comet"))
    uploads = archive.get("file_name", []) + archive.get("file_upload", [])
    assert any("step-1.ckpt" in str(upload) for upload in uploads), sorted(archive)


def test_other_ranks_touch_nothing(tmp_path):
    logger = CometLogger(offline=True, save_dir=tmp_path / "comet")
    logger.set_global_rank(1)
    logger.log_metrics({"x": 1.0})
    logger.experiment.log_metric("x", 1.0)
    logger.finalize("success")
    assert logger.version is None
    assert not (tmp_path / "comet").exists()


_CRASH = """
import sys
from fabric_loggers import CometLogger
logger = CometLogger(project_name="crash", offline=True, save_dir=sys.argv[1])
logger.log_metrics({"loss": 1.0})
raise RuntimeError("the training loop failed")
"""


def test_an_exception_leaves_an_archive_marked_failed(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COMET_CONFIG": str(tmp_path / "no-comet-config")}
    result = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 1
    (archive,) = comet_offline_archives(str(tmp_path))
    assert [m for m in archive["metrics"] if m[1] == "loss"] == [(0, "loss", 1.0)]
    # Comet's own exception hook ends the experiment and marks it as crashed, with the error
    assert archive["experiment"]["customer_error_reported"] is True
    assert "the training loop failed" in archive["experiment"]["customer_error_message"]
