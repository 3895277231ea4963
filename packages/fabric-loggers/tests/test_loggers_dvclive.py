"""DVCLiveLogger against the real DVCLive, read back from its run files with DVCLive's own readers."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("dvclive", reason='the trackers session installs it: pip install "fabric-loggers[dvclive]"')
from dvclive.serialize import load_yaml
from dvclive.utils import parse_json, parse_tsv
from fabric_loggers import DVCLiveLogger

# generous: DVCLive imports DVC (seconds), and the machine may be loaded 10x
pytestmark = [pytest.mark.trackers, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def _outside_any_repository(monkeypatch, tmp_path):
    """DVCLive looks for a Git repository from the working directory (and runs ``dvc init`` in one it finds):
    run in the test's own folder, never in the checkout that runs pytest."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for variable in ("DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVCLIVE_RESUME", "DVC_STUDIO_TOKEN"):
        monkeypatch.delenv(variable, raising=False)


def history(run_dir, name: str) -> list[tuple[int, str]]:
    """``(step, value as written)`` of one metric's history file, through DVCLive's own TSV reader."""
    rows = parse_tsv(os.path.join(run_dir, "plots", "metrics", f"{name}.tsv"))
    return [(int(row["step"]), row[os.path.basename(name)]) for row in rows]


def test_metrics_steps_and_params_read_back_exactly(tmp_path):
    run = tmp_path / "run"
    logger = DVCLiveLogger(dir=run, save_dvc_exp=False, prefix="train")
    logger.log_hyperparams(argparse.Namespace(lr=0.1, model={"depth": 4, "act": None}, flag=True))
    logger.log_metrics({"loss": 1 / 3})
    logger.log_metrics({"loss": 0.25, "acc": torch.tensor(0.5)})
    logger.log_metrics({"loss": 1e-300}, step=10)
    logger.log_metrics({"loss": 2.0, "val/loss": 7})
    logger.finalize("success")

    assert history(run, "train-loss") == [(0, repr(1 / 3)), (1, "0.25"), (10, "1e-300"), (11, "2.0")]
    assert [(step, float(value)) for step, value in history(run, "train-loss")] == [
        (0, 1 / 3),
        (1, 0.25),
        (10, 1e-300),
        (11, 2.0),
    ]
    assert history(run, "train-acc") == [(1, "0.5")]
    assert history(run, "train-val/loss") == [(11, "7")]  # DVCLive nests names at "/"
    assert load_yaml(str(run / "params.yaml")) == {"lr": 0.1, "model/depth": 4, "model/act": "None", "flag": True}
    summary = parse_json(str(run / "metrics.json"))
    assert summary == {"train-loss": 2.0, "train-acc": 0.5, "train-val": {"loss": 7}, "step": 11, "status": "success"}
    # dvc.yaml (in the working directory, DVCLive's default) points DVC at the run's files
    assert load_yaml("dvc.yaml")["metrics"] == ["run/metrics.json"]


def test_resume_continues_the_steps_and_keeps_the_history(tmp_path):
    first = DVCLiveLogger(dir=tmp_path / "run", save_dvc_exp=False)
    first.log_hyperparams({"lr": 0.1})
    first.log_metrics({"loss": 3.0})
    first.log_metrics({"loss": 2.0})
    first.finalize("failed")
    assert parse_json(str(tmp_path / "run" / "metrics.json"))["status"] == "failed"

    resumed = DVCLiveLogger(dir=tmp_path / "run", resume=True, save_dvc_exp=False)
    resumed.log_metrics({"loss": 1.0})
    assert parse_json(str(tmp_path / "run" / "metrics.json"))["status"] == "running"
    resumed.log_hyperparams({"batch": 8})
    resumed.finalize("success")
    assert history(tmp_path / "run", "loss") == [(0, "3.0"), (1, "2.0"), (2, "1.0")]
    assert load_yaml(str(tmp_path / "run" / "params.yaml")) == {"lr": 0.1, "batch": 8}
    assert parse_json(str(tmp_path / "run" / "metrics.json")) == {"loss": 1.0, "step": 2, "status": "success"}

    # finalize, then log again: the same logger continues its own run instead of starting it afresh
    resumed.log_metrics({"loss": 0.5})
    resumed.finalize("success")
    assert history(tmp_path / "run", "loss")[-2:] == [(2, "1.0"), (3, "0.5")]


def test_a_new_run_never_deletes_an_earlier_one_outside_git(tmp_path):
    first = DVCLiveLogger(dir=tmp_path / "run", save_dvc_exp=False)
    first.log_metrics({"loss": 3.0})
    first.finalize("success")
    second = DVCLiveLogger(dir=tmp_path / "run", save_dvc_exp=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        second.log_metrics({"loss": 1.0})
    assert history(tmp_path / "run", "loss") == [(0, "3.0")]


_CRASH = """
import sys
from fabric_loggers import DVCLiveLogger
logger = DVCLiveLogger(dir=sys.argv[1], save_dvc_exp=False)
logger.log_hyperparams({"lr": 0.1})
for step in range(3):
    logger.log_metrics({"loss": step * 0.5})
if sys.argv[2] == "raise":
    raise RuntimeError("the training loop failed")
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_a_crashed_process_leaves_a_run_dvclive_resumes(tmp_path, how):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", _CRASH, str(run), how], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode != 0
    assert history(run, "loss") == [(0, "0.0"), (1, "0.5"), (2, "1.0")]  # every row reached the file
    # An exception ends the run as failed at interpreter exit; SIGKILL lets nothing run: it stays "running".
    assert parse_json(str(run / "metrics.json"))["status"] == ("failed" if how == "raise" else "running")

    resumed = DVCLiveLogger(dir=run, resume=True, save_dvc_exp=False)
    resumed.log_metrics({"loss": 9.0})
    resumed.finalize("success")
    assert history(run, "loss")[-2:] == [(2, "1.0"), (3, "9.0")]
    assert load_yaml(str(run / "params.yaml")) == {"lr": 0.1}


def _git(folder, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@e"
    subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True)


def test_checkpoints_go_to_dvc_and_the_run_becomes_an_experiment_inside_git(tmp_path, monkeypatch):
    from fabric_core import Fabric

    _git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("# the user's script\n")
    _git(tmp_path, "add", "train.py")
    _git(tmp_path, "commit", "-q", "-m", "start")
    for name, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@e")):
        monkeypatch.setenv(name, value)
        monkeypatch.setenv(name.replace("AUTHOR", "COMMITTER"), value)

    logger = DVCLiveLogger(exp_name="first-try", log_checkpoints=True)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    model = fabric.setup(torch.nn.Linear(2, 1))
    fabric.log("loss", 0.5)
    fabric.save(tmp_path / "step-1.ckpt", {"model": model})
    logger.finalize("success")

    assert logger.version == "first-try"
    pointer = load_yaml(str(tmp_path / "step-1.ckpt.dvc"))  # `dvc add` tracked the checkpoint
    (out,) = pointer["outs"]
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
    assert torch.equal(torch.load(cached)["model"]["weight"], model.weight.detach())
    assert load_yaml("dvc.yaml")["artifacts"]["checkpoints"] == {"path": "step-1.ckpt", "type": "model"}
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.split()
    assert [ref for ref in refs if ref.endswith("/first-try")]  # `dvc exp save` kept the run as a DVC experiment


def test_other_ranks_touch_nothing_and_get_a_no_op_experiment(tmp_path):
    logger = DVCLiveLogger(dir=tmp_path / "run")
    logger.set_global_rank(1)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"x": 1.0})
    logger.experiment.log_metric("x", 1.0)  # the no-op object takes any call
    logger.finalize("success")
    assert os.listdir(tmp_path) == []


def test_missing_dvclive_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dvclive", None)  # as if it were not installed
    with pytest.raises(ModuleNotFoundError, match=r'pip install "fabric-loggers\[dvclive\]"'):
        DVCLiveLogger(dir=tmp_path / "run").log_metrics({"x": 1.0})


def test_by_name_through_the_entry_point(tmp_path):
    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", devices=1, loggers=["dvclive"])
    assert isinstance(fabric.logger, DVCLiveLogger)
    fabric.log("x", 1.5)
    fabric.logger.finalize("success")
    assert history(tmp_path / "dvclive", "x") == [(0, "1.5")]
