"""Run folders (root_dir/name/version_N), argument checks, rank-0-only writing, pickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from fabric_core.plugins import Logger
from fabric_loggers import CSVLogger, TensorBoardLogger
from loggers_testing import all_files

LOGGERS = [CSVLogger, TensorBoardLogger]


@pytest.mark.parametrize("cls", LOGGERS)
def test_is_a_fabric_logger_and_creates_nothing_until_used(cls, tmp_path):
    logger = cls(tmp_path / "logs")
    assert isinstance(logger, Logger)
    assert not (tmp_path / "logs").exists()
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finalize("success")
    assert logger.version == 0
    assert logger.log_dir == os.path.join(str(tmp_path / "logs"), "fabric_logs", "version_0")
    assert logger.root_dir == str(tmp_path / "logs")
    assert logger.name == "fabric_logs"


@pytest.mark.parametrize("cls", LOGGERS)
def test_next_free_version_follows_the_highest(cls, tmp_path):
    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    (tmp_path / "exp" / "version_4").mkdir()
    (tmp_path / "exp" / "version_x").mkdir()  # not a version
    (tmp_path / "exp" / "version_9").write_text("a file, not a run")
    first = cls(tmp_path, name="exp")
    first.log_metrics({"x": 1}, step=0)
    second = cls(tmp_path, name="exp")
    second.log_metrics({"x": 1}, step=0)
    assert (first.version, second.version) == (5, 6)
    first.finalize("success")
    second.finalize("success")
    assert os.path.isdir(tmp_path / "exp" / "version_6")


@pytest.mark.parametrize("cls", LOGGERS)
def test_given_version_int_or_str_and_no_name(cls, tmp_path):
    as_int = cls(tmp_path, name="exp", version=3)
    as_str = cls(tmp_path, name=None, version="baseline")
    for logger in (as_int, as_str):
        logger.log_metrics({"x": 1}, step=0)
        logger.finalize("success")
    assert as_int.log_dir == os.path.join(str(tmp_path), "exp", "version_3")
    assert as_str.log_dir == os.path.join(str(tmp_path), "baseline")
    assert as_str.name == ""
    assert os.listdir(as_str.log_dir)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"version": -1}, ValueError, "non-negative"),
        ({"version": 1.5}, TypeError, "int, a str or None"),
        ({"version": "a/b"}, ValueError, "plain folder name"),
        ({"name": 3}, TypeError, "name must be a str or None"),
        ({"prefix": None}, TypeError, "prefix must be a str"),
        ({"flush_logs_every_n_steps": 0}, ValueError, "positive int or None"),
        ({"flush_logs_every_n_seconds": -2}, ValueError, "positive number or None"),
    ],
)
@pytest.mark.parametrize("cls", LOGGERS)
def test_bad_arguments_fail_at_construction_naming_the_choices(cls, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(tmp_path, **kwargs)


@pytest.mark.parametrize("cls", LOGGERS)
def test_metric_values_must_be_numbers(cls, tmp_path):
    import torch

    logger = cls(tmp_path)
    with pytest.raises(TypeError, match="metric 'acc' must be a single number"):
        logger.log_metrics({"acc": "high"}, step=0)
    with pytest.raises(TypeError, match="metric 'vec'"):
        logger.log_metrics({"vec": torch.ones(3)}, step=0)
    logger.finalize("success")


@pytest.mark.parametrize("cls", LOGGERS)
def test_nonzero_rank_from_the_environment_writes_nothing(cls, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    logger = cls(tmp_path)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"x": 1.0}, step=0)
    logger.save()
    logger.finalize("success")
    assert all_files(str(tmp_path)) == []
    assert logger.log_dir.endswith("version_0")  # other ranks compute the folder but never create it
    assert not os.path.exists(tmp_path / "fabric_logs")


@pytest.mark.parametrize("cls", LOGGERS)
def test_pickles_without_open_files_and_keeps_the_claimed_version(cls, tmp_path):
    logger = cls(tmp_path, flush_logs_every_n_steps=None)
    logger.log_metrics({"x": 1.0}, step=0)
    clone = pickle.loads(pickle.dumps(logger))
    assert clone.log_dir == logger.log_dir
    clone.log_metrics({"x": 2.0}, step=1)
    clone.finalize("success")
    logger.finalize("success")
    assert os.listdir(tmp_path / "fabric_logs") == ["version_0"]


_EXIT_SCRIPT = """
import sys
from fabric_loggers import CSVLogger, TensorBoardLogger
csv_logger = CSVLogger(sys.argv[1], name="csv", flush_logs_every_n_steps=None)
tb_logger = TensorBoardLogger(sys.argv[1], name="tb", flush_logs_every_n_steps=None)
for step in range(3):
    csv_logger.log_metrics({"loss": step / 2}, step=step)
    tb_logger.log_metrics({"loss": step / 2}, step=step)
if sys.argv[2] == "raise":
    raise RuntimeError("the training loop failed")
"""


@pytest.mark.parametrize("ending", ["return", "raise"])
def test_interpreter_exit_flushes_what_was_never_saved(tmp_path, ending):
    """No finalize(), no flush schedule: a normal exit or an exception still keeps every metric."""
    from loggers_testing import read_csv, scalars

    result = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(tmp_path), ending], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode == 0) == (ending == "return"), result.stderr
    _, rows = read_csv(str(tmp_path / "csv" / "version_0" / "metrics.csv"))
    assert [(row["step"], row["loss"]) for row in rows] == [("0", "0.0"), ("1", "0.5"), ("2", "1.0")]
    assert scalars(str(tmp_path / "tb" / "version_0"), "loss") == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_import_is_cheap():
    """``import fabric_loggers`` pulls in neither TensorBoard nor PyYAML (nor torch's TensorBoard writer)."""
    code = (
        "import sys, fabric_loggers; "
        "print(sorted(m for m in ('tensorboard', 'yaml', 'torch.utils.tensorboard') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_declares_a_plugin_api_version_core_accepts():
    from importlib import metadata

    from fabric_core import registry

    entries = {ep.name: ep for ep in metadata.entry_points(group=registry.API_GROUP)}
    from fabric_loggers.__about__ import FABRIC_PLUGIN_API

    assert entries["fabric_loggers"].load() == FABRIC_PLUGIN_API
    registry.check_api_version("fabric-loggers")  # raises PluginVersionError when core cannot serve it
