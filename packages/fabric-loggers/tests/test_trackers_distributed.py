"""Trackers under a real 2-process DDP job (gloo on loopback): one run per tracker, written by rank 0 only,
and a run whose writing rank crashed can still be opened, marked failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("mlflow")
pytest.importorskip("wandb")
pytest.importorskip("comet_ml")
pytest.importorskip("dvclive")
from dvclive.utils import parse_json, parse_tsv
from fabric_loggers import CometLogger, DVCLiveLogger, MLflowLogger, WandbLogger
from loggers_testing import comet_offline_archives, user_metrics, wandb_offline_run
from mlflow import MlflowClient

# generous: two spawned ranks each import MLflow, W&B and Comet; the machine may be loaded 10x
pytestmark = [pytest.mark.trackers, pytest.mark.multiprocess, pytest.mark.timeout(1800)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a Git repository from here (and would `dvc init` it)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no-comet-config"))


def _train(fabric, crash_at: int | None) -> None:
    fabric.setup(torch.nn.Linear(2, 1))  # the DDP process group is up on both ranks
    for logger in fabric.loggers:
        logger.log_hyperparams({"world_size": fabric.world_size, "optim": {"lr": 0.1}})
    for step in range(3):
        if crash_at == step and fabric.global_rank == 0:
            raise RuntimeError("rank 0 crashed mid-run")
        fabric.log_dict({"rank": fabric.global_rank, "step_value": step * 0.5})
    for logger in fabric.loggers:
        logger.finalize("success")


def _loggers(tmp_path):
    return [
        MLflowLogger(experiment_name="ddp", tracking_uri="sqlite:///" + str(tmp_path / "mlflow.db")),
        WandbLogger(project="ddp", save_dir=tmp_path, id="fabricddp1"),
        CometLogger(project_name="ddp", offline=True, save_dir=tmp_path / "comet"),
        DVCLiveLogger(dir=tmp_path / "dvclive", save_dvc_exp=False),
    ]


def _dvclive_history(tmp_path, name: str) -> list[tuple[int, str]]:
    return [(int(r["step"]), r[name]) for r in parse_tsv(tmp_path / "dvclive" / "plots" / "metrics" / f"{name}.tsv")]


def _mlflow_runs(tmp_path):
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    return client, client.search_runs([client.get_experiment_by_name("ddp").experiment_id])


def test_two_ranks_write_exactly_one_run_per_tracker(tmp_path):
    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, loggers=_loggers(tmp_path))
    fabric.launch(_train, None)

    client, runs = _mlflow_runs(tmp_path)
    assert len(runs) == 1
    (run,) = runs
    assert run.info.status == "FINISHED"
    assert run.data.params == {"world_size": "2", "optim/lr": "0.1"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "rank")] == [
        (0, 0.0),
        (1, 0.0),
        (2, 0.0),
    ]

    wandb_run = wandb_offline_run(str(tmp_path), "fabricddp1")
    assert wandb_run["runs"] == 1
    assert [(s, user_metrics(v)) for s, v in wandb_run["history"]] == [
        (step, {"rank": 0, "step_value": step * 0.5}) for step in range(3)
    ]
    assert len([p for p in os.listdir(tmp_path / "wandb") if p.startswith("offline-run-")]) == 1

    (archive,) = comet_offline_archives(str(tmp_path / "comet"))
    assert sorted(m for m in archive["metrics"] if m[1] == "rank") == [(s, "rank", 0) for s in range(3)]
    assert archive["params"] == {"world_size": 2, "optim/lr": 0.1}

    assert _dvclive_history(tmp_path, "rank") == [(0, "0"), (1, "0"), (2, "0")]
    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "success"
    assert sorted(os.listdir(tmp_path / "dvclive")) == ["metrics.json", "params.yaml", "plots"]


def test_rank_zero_crashing_mid_run_leaves_runs_marked_failed(tmp_path):
    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, loggers=_loggers(tmp_path))
    with pytest.raises(Exception, match="rank 0 crashed mid-run"):
        fabric.launch(_train, 2)

    client, runs = _mlflow_runs(tmp_path)
    (run,) = runs
    assert run.info.status == "FAILED"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step_value")] == [(0, 0.0), (1, 0.5)]

    wandb_run = wandb_offline_run(str(tmp_path), "fabricddp1")
    assert wandb_run["exit_code"] == 1
    assert [s for s, _ in wandb_run["history"]] == [0, 1]

    (archive,) = comet_offline_archives(str(tmp_path / "comet"))
    assert sorted(m for m in archive["metrics"] if m[1] == "step_value") == [
        (0, "step_value", 0.0),
        (1, "step_value", 0.5),
    ]
    # Comet ends the experiment from its own shutdown hook before any atexit hook of ours can mark it, and the
    # exception was caught by the launcher (no Comet crash report): the archive is whole, never marked success.
    assert archive["others"].get("status") != "success"

    assert _dvclive_history(tmp_path, "step_value") == [(0, "0.0"), (1, "0.5")]
    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "failed"


def _train_until_rank_one_is_killed(fabric) -> None:
    model = fabric.setup(torch.nn.Linear(2, 1))
    for logger in fabric.loggers:
        logger.log_hyperparams({"world_size": fabric.world_size})
    step = 0
    while True:  # rank 0 ends when the launcher stops it, or when its all-reduce loses rank 1
        if step == 3 and fabric.global_rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        fabric.backward(model(torch.ones(4, 2)).sum())
        fabric.log_dict({"step_value": step * 0.5})
        step += 1


def test_another_rank_killed_mid_run_leaves_every_run_marked_failed(tmp_path):
    """Rank 1 dies by SIGKILL; rank 0, which writes the runs, is stopped by the launcher (SIGTERM) or fails in
    its next all-reduce: either way each tracker's run ends failed, holding every step rank 0 logged."""
    from fabric_core import Fabric
    from fabric_core.launchers.failures import WorkerFailedError

    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, loggers=_loggers(tmp_path))
    with pytest.raises(WorkerFailedError, match="rank 1"):
        fabric.launch(_train_until_rank_one_is_killed)

    client, runs = _mlflow_runs(tmp_path)
    (run,) = runs
    assert run.info.status == "FAILED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step_value"))
    assert len(history) >= 3
    assert history == [(step, step * 0.5) for step in range(len(history))]

    wandb_run = wandb_offline_run(str(tmp_path), "fabricddp1")
    assert wandb_run["exit_code"] == 1
    assert [s for s, _ in wandb_run["history"]] == list(range(len(wandb_run["history"])))

    (archive,) = comet_offline_archives(str(tmp_path / "comet"))
    assert archive["others"]["status"] == "failed"

    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "failed"
    dvclive_steps = [step for step, _ in _dvclive_history(tmp_path, "step_value")]
    assert dvclive_steps == list(range(len(dvclive_steps))) and len(dvclive_steps) >= 3


_SCRIPT = """
import os, signal, sys
import torch
from fabric_core import Fabric
from fabric_loggers import DVCLiveLogger, MLflowLogger

def main() -> None:
    folder = sys.argv[1]
    loggers = [
        MLflowLogger(experiment_name="ddp", tracking_uri=f"sqlite:///{folder}/mlflow.db"),
        DVCLiveLogger(dir=f"{folder}/dvclive", save_dvc_exp=False, dvcyaml=None),
    ]
    fabric = Fabric(accelerator="cpu", strategy="ddp", devices=2, loggers=loggers)
    fabric.launch()
    model = fabric.setup(torch.nn.Linear(2, 1))
    step = 0
    while True:
        if step == 3 and fabric.global_rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        fabric.backward(model(torch.ones(4, 2)).sum())
        fabric.log_dict({"step_value": step * 0.5})
        step += 1

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("launcher", ["script", "torchrun"])
def test_another_rank_killed_under_the_script_launcher_or_torchrun(tmp_path, launcher):
    """Rank 0 is the script's own process (fabric's launcher) or one of torchrun's workers (torchrun stops the
    survivors with SIGTERM): the runs end failed either way."""
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    prefix = [sys.executable] if launcher == "script" else [sys.executable, "-m", "torch.distributed.run"]
    if launcher == "torchrun":
        prefix += ["--standalone", "--nproc-per-node", "2"]  # standalone: a local rendezvous on a free port
    result = subprocess.run([*prefix, str(script), str(tmp_path)], cwd=tmp_path, capture_output=True, timeout=900)
    assert result.returncode != 0

    client, runs = _mlflow_runs(tmp_path)
    (run,) = runs
    assert run.info.status == "FAILED", result.stderr.decode()[-3000:]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step_value"))
    assert history == [(step, step * 0.5) for step in range(len(history))] and len(history) >= 3
    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "failed"


def _train_until_rank_zero_is_killed(fabric) -> None:
    model = fabric.setup(torch.nn.Linear(2, 1))
    for step in range(1_000_000):
        fabric.backward(model(torch.ones(4, 2)).sum())
        fabric.log_dict({"step_value": step * 0.5})
        if step == 3 and fabric.global_rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def test_rank_zero_killed_leaves_an_open_run_that_a_resume_continues(tmp_path):
    """Nobody can write for a SIGKILLed rank 0: the run stays open ("running") with every step it logged, and
    resuming it by id (the documented way on) continues and ends it."""
    from fabric_core import Fabric
    from fabric_core.launchers.failures import WorkerFailedError

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    loggers = [
        MLflowLogger(experiment_name="ddp", tracking_uri=uri),
        DVCLiveLogger(dir=tmp_path / "dvclive", save_dvc_exp=False, dvcyaml=None),
    ]
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, loggers=loggers)
    with pytest.raises(WorkerFailedError, match="rank 0"):
        fabric.launch(_train_until_rank_zero_is_killed)

    client, (run,) = _mlflow_runs(tmp_path)
    assert run.info.status == "RUNNING"
    expected = [(step, step * 0.5) for step in range(4)]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "step_value")) == expected
    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "running"
    assert _dvclive_history(tmp_path, "step_value") == [(step, str(value)) for step, value in expected]

    mlflow_resumed = MLflowLogger(tracking_uri=uri, run_id=run.info.run_id)
    dvclive_resumed = DVCLiveLogger(dir=tmp_path / "dvclive", resume=True, save_dvc_exp=False, dvcyaml=None)
    for logger in (mlflow_resumed, dvclive_resumed):
        logger.log_metrics({"step_value": 2.0})
        logger.finalize("success")
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert client.get_metric_history(run.info.run_id, "step_value")[-1].step == 4
    assert parse_json(tmp_path / "dvclive" / "metrics.json")["status"] == "success"
    assert _dvclive_history(tmp_path, "step_value")[-1] == (4, "2.0")
