"""DVCLiveLogger's own append path writes exactly DVCLive's files, and keeps every row of a killed process."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("dvclive", reason='the trackers session installs it: pip install "fabric-loggers[dvclive]"')
from dvclive import Live
from dvclive.utils import parse_json, parse_tsv
from fabric_loggers import DVCLiveLogger
from fabric_loggers._dvclive_rows import MetricRows

pytestmark = [pytest.mark.trackers, pytest.mark.timeout(900)]

#: steps of metrics as a training loop logs them: nested names, ints, NaN and infinities, a metric that starts late
STEPS = [
    (
        step,
        {"loss": 1 / (step + 1), "train/acc": step, "odd": [0.5, float("nan"), float("inf"), -float("inf")][step % 4]},
    )
    for step in range(9)
] + [(9, {"late": 1e-300, "loss": 0.0})]


@pytest.fixture(autouse=True)
def _outside_any_repository(monkeypatch, tmp_path):
    """DVCLive runs ``dvc init`` in a Git repository it finds from the working directory: stay out of the checkout."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for variable in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVCLIVE_RESUME", "DVC_STUDIO_TOKEN"):
        monkeypatch.delenv(variable, raising=False)


def run_files(folder) -> dict[str, bytes]:
    out = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_histories_are_byte_identical_to_dvclives_own(tmp_path):
    own = Live(str(tmp_path / "own"), save_dvc_exp=False, dvcyaml=None)
    for step, metrics in STEPS:
        own.step = step
        for name, value in metrics.items():
            own.log_metric(name, value)
    own.end()

    logger = DVCLiveLogger(dir=tmp_path / "ours", save_dvc_exp=False, dvcyaml=None)
    for step, metrics in STEPS:
        logger.log_metrics(metrics, step=step)
    logger.finalize("success")

    theirs, ours = run_files(tmp_path / "own"), run_files(tmp_path / "ours")
    histories = [name for name in theirs if name.endswith(".tsv")]
    assert sorted(histories) == sorted(name for name in ours if name.endswith(".tsv"))
    assert len(histories) == 4
    for name in histories:
        assert ours[name] == theirs[name], name
    summary = parse_json(str(tmp_path / "ours" / "metrics.json"))
    assert summary.pop("status") == "success"  # the one key the logger adds
    assert summary == parse_json(str(tmp_path / "own" / "metrics.json"))
    assert summary["odd"] == 0.5 and summary["train"] == {"acc": 8} and summary["late"] == 1e-300
    odd = parse_tsv(str(tmp_path / "ours" / "plots" / "metrics" / "odd.tsv"))
    assert [row["odd"] for row in odd[:4]] == ["0.5", "nan", "inf", "-inf"]  # as DVCLive spells them


def test_values_logged_through_the_experiment_in_between_stay_in_order(tmp_path):
    logger = DVCLiveLogger(dir=tmp_path / "run", save_dvc_exp=False, dvcyaml=None)
    logger.log_metrics({"loss": 3.0}, step=0)
    logger.log_metrics({"loss": 2.0}, step=1)
    live = logger.experiment
    live.step = 2
    live.log_metric("loss", 1.5)  # the user's own call into DVCLive, on the same history
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.finalize("success")
    rows = parse_tsv(str(tmp_path / "run" / "plots" / "metrics" / "loss.tsv"))
    assert [(row["step"], row["loss"]) for row in rows] == [("0", "3.0"), ("1", "2.0"), ("2", "1.5"), ("3", "1.0")]


def test_metrics_beyond_the_open_file_limit_go_through_dvclive(tmp_path):
    live = Live(str(tmp_path / "run"), save_dvc_exp=False, dvcyaml=None)
    rows = MetricRows(live, open_limit=2)
    for step in range(3):
        live.step = step
        for index in range(5):
            rows.log(f"m{index}", step * 10 + index, step)
    rows.close()
    live.end()
    compare = Live(str(tmp_path / "own"), save_dvc_exp=False, dvcyaml=None)
    for step in range(3):
        compare.step = step
        for index in range(5):
            compare.log_metric(f"m{index}", step * 10 + index)
    compare.end()
    for index in range(5):
        name = os.path.join("plots", "metrics", f"m{index}.tsv")
        assert filecmp.cmp(tmp_path / "run" / name, tmp_path / "own" / name, shallow=False), name


_KILLED = """
import os, signal, sys
from fabric_loggers import DVCLiveLogger
logger = DVCLiveLogger(dir=sys.argv[1], save_dvc_exp=False, dvcyaml=None)
for step in range(500):
    logger.log_metrics({"loss": step / 2, "acc": step}, step=step)
print("logged", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_keeps_every_row(tmp_path):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path / "run")], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.strip() == "logged"
    rows = parse_tsv(str(tmp_path / "run" / "plots" / "metrics" / "loss.tsv"))
    assert [(int(row["step"]), float(row["loss"])) for row in rows] == [(step, step / 2) for step in range(500)]
    assert len(parse_tsv(str(tmp_path / "run" / "plots" / "metrics" / "acc.tsv"))) == 500
    resumed = DVCLiveLogger(dir=tmp_path / "run", resume=True, save_dvc_exp=False, dvcyaml=None)
    resumed.log_metrics({"loss": -1.0})
    resumed.finalize("success")
    rows = parse_tsv(str(tmp_path / "run" / "plots" / "metrics" / "loss.tsv"))
    assert len(rows) == 501 and rows[-1] == {"step": "500", "loss": "-1.0"}
