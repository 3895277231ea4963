"""MLflowLogger against the real MLflow (local sqlite and file stores), read back with ``MlflowClient``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

mlflow = pytest.importorskip("mlflow", reason='the trackers session installs it: pip install "fabric-loggers[mlflow]"')
from fabric_loggers import MLflowLogger  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

# generous: MLflow creates its tables and every tracker starts helper processes; the machine may be loaded 10x
pytestmark = [pytest.mark.trackers, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _own_working_directory(monkeypatch, tmp_path):
    """MLflow puts a new experiment's artifacts under ./mlruns when the store has no artifact root: not in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One sqlite store for the module: creating MLflow's tables takes seconds."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(metric.step, metric.value) for metric in client.get_metric_history(run_id, key)]


def test_metrics_steps_and_params_read_back_exactly(tracking_uri, tmp_path):
    logger = MLflowLogger(experiment_name="exact", run_name="first", tracking_uri=tracking_uri, prefix="train")
    logger.log_hyperparams(argparse.Namespace(lr=0.1, model={"depth": 4, "act": None}, flag=True))
    logger.log_metrics({"loss": 1 / 3})
    logger.log_metrics({"loss": 0.25, "acc": torch.tensor(0.5)})
    logger.log_metrics({"loss": 1e-300}, step=10)
    logger.log_metrics({"loss": 2.0})
    logger.finalize("success")

    client = MlflowClient(tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert run.data.params == {"lr": "0.1", "model/depth": "4", "model/act": "None", "flag": "True"}
    assert _history(client, logger.run_id, "train-loss") == [(0, 1 / 3), (1, 0.25), (10, 1e-300), (11, 2.0)]
    assert _history(client, logger.run_id, "train-acc") == [(1, 0.5)]
    runs = client.search_runs([client.get_experiment_by_name("exact").experiment_id])
    assert [r.info.run_id for r in runs] == [logger.run_id]


def test_resume_by_run_id_continues_the_steps(tracking_uri):
    first = MLflowLogger(experiment_name="resume", tracking_uri=tracking_uri)
    first.log_metrics({"loss": 3.0})
    first.log_metrics({"loss": 2.0})
    first.finalize("failed")
    client = MlflowClient(tracking_uri)
    assert client.get_run(first.run_id).info.status == "FAILED"

    resumed = MLflowLogger(tracking_uri=tracking_uri, run_id=first.run_id)
    resumed.log_metrics({"loss": 1.0})
    assert client.get_run(first.run_id).info.status == "RUNNING"
    resumed.finalize("success")
    assert _history(client, first.run_id, "loss") == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_experiment_by_name("resume").experiment_id])) == 1


def test_default_store_is_sqlite_under_save_dir_and_file_store_works_too(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = MLflowLogger(save_dir=tmp_path / "mlruns")
    assert logger.tracking_uri == "sqlite:///" + str(tmp_path / "mlruns" / "mlflow.db")
    logger.log_metrics({"x": 1.0})
    logger.finalize("success")
    assert _history(MlflowClient(logger.tracking_uri), logger.run_id, "x") == [(0, 1.0)]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its deprecated file store otherwise
    file_store = f"file:{tmp_path / 'file_store'}"
    other = MLflowLogger(tracking_uri=file_store)
    other.log_metrics({"x": 2.0})
    other.finalize("success")
    assert _history(MlflowClient(file_store), other.run_id, "x") == [(0, 2.0)]


def test_fabric_save_hands_checkpoints_to_a_logger_that_asks(tracking_uri, tmp_path):
    from fabric_core import Fabric

    asking = MLflowLogger(experiment_name="ckpt", tracking_uri=tracking_uri, log_checkpoints=True)
    silent = MLflowLogger(experiment_name="ckpt", tracking_uri=tracking_uri)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[asking, silent])
    model = fabric.setup(torch.nn.Linear(2, 1))
    fabric.log("loss", torch.tensor(0.5))
    fabric.save(tmp_path / "step-1.ckpt", {"model": model, "step": 1})
    for logger in fabric.loggers:
        logger.finalize("success")
    client = MlflowClient(tracking_uri)
    assert [a.path for a in client.list_artifacts(asking.run_id, "checkpoints")] == ["checkpoints/step-1.ckpt"]
    assert client.list_artifacts(silent.run_id) == []
    downloaded = client.download_artifacts(asking.run_id, "checkpoints/step-1.ckpt", str(tmp_path / "down"))
    assert torch.equal(torch.load(downloaded)["model"]["weight"], model.weight.detach())


def test_other_ranks_touch_nothing_and_get_a_no_op_experiment(tmp_path):
    logger = MLflowLogger(save_dir=tmp_path / "mlruns")
    logger.set_global_rank(1)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"x": 1.0})
    logger.experiment.log_metric("run", "x", 1.0)  # the no-op object takes any call
    logger.finalize("success")
    assert logger.run_id is None
    assert not (tmp_path / "mlruns").exists()


_CRASH = """
import sys
from fabric_loggers import MLflowLogger
logger = MLflowLogger(experiment_name="crash", tracking_uri=sys.argv[1])
logger.log_metrics({"loss": 1.0})
print(logger.run_id, flush=True)
if sys.argv[2] == "raise":
    raise RuntimeError("the training loop failed")
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_a_crashed_process_leaves_a_run_mlflow_opens(tracking_uri, how):
    result = subprocess.run(
        [sys.executable, "-c", _CRASH, tracking_uri, how], capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    run_id = result.stdout.split()[0]
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert _history(client, run_id, "loss") == [(0, 1.0)]
    # An exception ends the run as FAILED at interpreter exit; SIGKILL lets nothing run, so it stays RUNNING.
    assert run.info.status == ("FAILED" if how == "raise" else "RUNNING")


def test_missing_mlflow_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fabric-loggers\[mlflow\]"'):
        MLflowLogger(save_dir=tmp_path).log_metrics({"x": 1.0})


def test_by_name_through_the_entry_point(tracking_uri, monkeypatch):
    from fabric_core import Fabric

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=["mlflow"])
    assert isinstance(fabric.logger, MLflowLogger)
    fabric.log("x", 1.5)
    fabric.logger.finalize("success")
    assert _history(MlflowClient(os.environ["MLFLOW_TRACKING_URI"]), fabric.logger.run_id, "x") == [(0, 1.5)]


def test_asynchronous_logging_is_waited_for_and_opens_no_default_store(tracking_uri, tmp_path):
    logger = MLflowLogger(experiment_name="async", tracking_uri=tracking_uri, synchronous=False)
    logger.log_hyperparams({"lr": 0.1})
    for step in range(300):  # more than the logger keeps queued before it waits
        logger.log_metrics({"loss": step * 0.5})
    logger.save()
    client = MlflowClient(tracking_uri)
    assert len(client.get_metric_history(logger.run_id, "loss")) == 300
    logger.log_metrics({"loss": -1.0})
    logger.finalize("success")
    assert _history(client, logger.run_id, "loss")[-1] == (300, -1.0)
    assert client.get_run(logger.run_id).data.params == {"lr": "0.1"}
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    # waiting went through this logger's own requests, not mlflow.flush_async_logging()'s default store
    assert not (tmp_path / "mlflow.db").exists()
