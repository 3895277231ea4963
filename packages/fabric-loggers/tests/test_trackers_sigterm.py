"""SIGTERM (how launchers stop the surviving ranks of a job) ends an open tracker run as failed, and the
process still dies by SIGTERM; checked in real processes against each tracker's own reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from loggers_testing import comet_offline_archives, wandb_offline_run

pytestmark = [
    pytest.mark.trackers,
    pytest.mark.timeout(900),
    pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX"),
]

# Logs in a tight loop, so the signal often lands inside the tracker library (the deferred path).
_LOOP = """
import sys
from fabric_loggers import CometLogger, DVCLiveLogger, MLflowLogger, WandbLogger
kind, folder = sys.argv[1], sys.argv[2]
if kind == "mlflow":
    logger = MLflowLogger(experiment_name="term", tracking_uri=f"sqlite:///{folder}/mlflow.db")
elif kind == "wandb":
    logger = WandbLogger(project="term", save_dir=folder, offline=True, id="fabricterm1")
elif kind == "comet":
    logger = CometLogger(project_name="term", offline=True, save_dir=folder)
else:
    logger = DVCLiveLogger(dir=f"{folder}/dvclive", save_dvc_exp=False, dvcyaml=None)
if sys.argv[3] == "own-handler":
    import signal
    def handler(signum, frame):
        print("own handler", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, handler)
logger.log_hyperparams({"lr": 0.1})
logger.log_metrics({"v": 0.0}, step=0)
print(logger.version, flush=True)
step = 1
while True:
    logger.log_metrics({"v": step * 0.5}, step=step)
    step += 1
"""

_TRACKERS = {"mlflow": "mlflow", "wandb": "wandb", "comet": "comet_ml", "dvclive": "dvclive"}


def _run_and_terminate(kind: str, folder: str, mode: str) -> tuple[str, int, str]:
    """Start the loop, wait for its first logged step, SIGTERM it: (run id, exit status, stdout after the id)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "DVC_NO_ANALYTICS": "1"}
    env["COMET_CONFIG"] = os.path.join(folder, "no-comet-config")
    process = subprocess.Popen(
        [sys.executable, "-c", _LOOP, kind, folder, mode], stdout=subprocess.PIPE, text=True, cwd=folder, env=env
    )
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=300)
    if not first or not first[0].strip():
        process.kill()
        pytest.fail(f"the {kind} loop did not start")
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    process.wait(timeout=300)
    return first[0].strip(), process.returncode, rest


def _logged_values_are_whole(steps_and_values: list[tuple[int, float]]) -> None:
    """Every step from 0 up to the last one written, with its value: nothing garbled by the interruption."""
    assert len(steps_and_values) >= 1
    assert steps_and_values == [(step, step * 0.5) for step in range(len(steps_and_values))]


def _status_and_history(kind: str, folder: str, run_id: str) -> tuple[str, list[tuple[int, float]]]:
    if kind == "mlflow":
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "v"))
        return client.get_run(run_id).info.status, history
    if kind == "wandb":
        run = wandb_offline_run(folder, run_id)
        return f"exit {run['exit_code']}", [(step, values["v"]) for step, values in run["history"]]
    if kind == "comet":
        (archive,) = comet_offline_archives(folder)
        history = sorted((step, value) for step, name, value in archive["metrics"] if name == "v")
        return archive["others"]["status"], history
    from dvclive.utils import parse_json, parse_tsv

    rows = parse_tsv(os.path.join(folder, "dvclive", "plots", "metrics", "v.tsv"))
    return parse_json(os.path.join(folder, "dvclive", "metrics.json"))["status"], [
        (int(row["step"]), float(row["v"])) for row in rows
    ]


_FAILED = {"mlflow": "FAILED", "wandb": "exit 1", "comet": "failed", "dvclive": "failed"}


@pytest.mark.parametrize("kind", list(_TRACKERS))
def test_sigterm_ends_the_run_as_failed_and_the_process_dies_by_it(tmp_path, kind):
    pytest.importorskip(_TRACKERS[kind])
    run_id, status, _ = _run_and_terminate(kind, str(tmp_path), "default")
    assert status == -signal.SIGTERM  # launchers still see a process stopped by SIGTERM
    found, history = _status_and_history(kind, str(tmp_path), run_id)
    assert found == _FAILED[kind]
    _logged_values_are_whole(history)


@pytest.mark.parametrize("kind", ["mlflow", "dvclive"])
def test_a_handler_installed_later_by_the_user_still_runs_and_the_run_is_failed(tmp_path, kind):
    pytest.importorskip(_TRACKERS[kind])
    run_id, status, rest = _run_and_terminate(kind, str(tmp_path), "own-handler")
    # The user's handler came after the logger's: it runs first and exits; the run ends failed at exit.
    assert (status, rest) == (3, "own handler\n")
    assert _status_and_history(kind, str(tmp_path), run_id)[0] == _FAILED[kind]


def test_finalize_gives_the_previous_sigterm_handler_back(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # nothing MLflow writes by default lands in the checkout
    from fabric_loggers import MLflowLogger

    before = signal.getsignal(signal.SIGTERM)
    logger = MLflowLogger(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    logger.log_metrics({"v": 1.0})
    assert signal.getsignal(signal.SIGTERM) is not before
    logger.finalize("success")
    assert signal.getsignal(signal.SIGTERM) is before
