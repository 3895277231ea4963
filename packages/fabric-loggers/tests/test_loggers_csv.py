"""CSVLogger: metrics.csv read back with the csv module, hparams.yaml with PyYAML."""

from __future__ import annotations

import argparse
import dataclasses
import os

import pytest
import torch
import yaml
from fabric_loggers import CSVLogger
from fabric_loggers._atomic import replace_atomically
from fabric_loggers._flush import FlushSchedule
from loggers_testing import read_csv


def _metrics_path(logger: CSVLogger) -> str:
    return os.path.join(logger.log_dir, "metrics.csv")


def test_rows_with_a_step_column(tmp_path):
    logger = CSVLogger(tmp_path)
    for step in range(3):
        logger.log_metrics({"loss": 1.0 / (step + 1), "acc": step}, step=step)
    logger.finalize("success")
    header, rows = read_csv(_metrics_path(logger))
    assert header == ["acc", "loss", "step"]  # sorted by name, as Lightning writes them
    assert [(int(r["step"]), float(r["loss"]), int(r["acc"])) for r in rows] == [
        (0, 1.0, 0),
        (1, 0.5, 1),
        (2, 1 / 3, 2),
    ]


def test_floats_round_trip_exactly(tmp_path):
    logger = CSVLogger(tmp_path)
    values = [0.1, 1 / 3, 1e-300, -2.5e17, float("inf")]
    for step, value in enumerate(values):
        logger.log_metrics({"v": value}, step=step)
    logger.finalize("success")
    _, rows = read_csv(_metrics_path(logger))
    assert [float(r["v"]) for r in rows] == values


def test_new_metric_names_extend_the_header_and_keep_earlier_rows(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=1)
    logger.log_metrics({"loss": 3.0}, step=0)
    logger.log_metrics({"loss": 2.0}, step=1)
    logger.log_metrics({"val_acc": 0.5}, step=1)
    logger.log_metrics({"loss": 1.0, "lr": 0.01}, step=2)
    header, rows = read_csv(_metrics_path(logger))
    assert header == ["loss", "lr", "step", "val_acc"]
    assert rows == [
        {"step": "0", "loss": "3.0", "val_acc": "", "lr": ""},
        {"step": "1", "loss": "2.0", "val_acc": "", "lr": ""},
        {"step": "1", "loss": "", "val_acc": "0.5", "lr": ""},
        {"step": "2", "loss": "1.0", "val_acc": "", "lr": "0.01"},
    ]
    logger.finalize("success")
    assert sorted(os.listdir(logger.log_dir)) == ["metrics.csv"]  # no temporary files left behind


def test_prefix_and_metric_names_that_need_quoting(tmp_path):
    logger = CSVLogger(tmp_path, prefix="val")
    logger.log_metrics({'acc, top-1 "strict"': 0.5}, step=0)
    logger.finalize("success")
    header, rows = read_csv(_metrics_path(logger))
    assert header == ["step", 'val-acc, top-1 "strict"']
    assert rows[0]['val-acc, top-1 "strict"'] == "0.5"


def test_step_is_a_reserved_name(tmp_path):
    with pytest.raises(ValueError, match="'step' is the CSV step column"):
        CSVLogger(tmp_path).log_metrics({"step": 3}, step=3)


def test_flush_every_n_steps(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=3)
    logger.log_metrics({"x": 0}, step=0)
    logger.log_metrics({"x": 1}, step=1)
    logger.log_metrics({"y": 1}, step=1)  # the same step again does not count
    assert not os.path.exists(_metrics_path(logger))
    logger.log_metrics({"x": 2}, step=2)
    assert len(read_csv(_metrics_path(logger))[1]) == 4
    logger.log_metrics({"x": 3}, step=3)
    logger.log_metrics({"x": 4}, step=4)
    assert len(read_csv(_metrics_path(logger))[1]) == 4
    logger.log_metrics({"x": 5}, step=5)
    assert [r["x"] for r in read_csv(_metrics_path(logger))[1]] == ["0", "1", "", "2", "3", "4", "5"]
    logger.finalize("success")


def test_flush_every_n_seconds(tmp_path):
    now = [100.0]
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=None, flush_logs_every_n_seconds=10)
    logger._schedule = FlushSchedule(None, 10, clock=lambda: now[0])
    logger.log_metrics({"x": 0}, step=0)
    now[0] = 109.0
    logger.log_metrics({"x": 1}, step=1)
    assert not os.path.exists(_metrics_path(logger))
    now[0] = 110.0
    logger.log_metrics({"x": 2}, step=2)
    assert len(read_csv(_metrics_path(logger))[1]) == 3
    now[0] = 115.0
    logger.log_metrics({"x": 3}, step=3)
    assert len(read_csv(_metrics_path(logger))[1]) == 3
    logger.finalize("success")
    assert len(read_csv(_metrics_path(logger))[1]) == 4


def test_no_schedule_writes_only_on_save(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=None)
    for step in range(500):
        logger.log_metrics({"x": step}, step=step)
    assert not os.path.exists(_metrics_path(logger))
    logger.save()
    assert len(read_csv(_metrics_path(logger))[1]) == 500
    logger.finalize("success")


def test_a_given_version_with_a_metrics_file_starts_a_new_one_and_keeps_the_old(tmp_path):
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"loss": 2.0}, step=0)
    first.finalize("success")
    resumed = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="exists and is not empty: its metrics.csv will be overwritten"):
        resumed.log_metrics({"loss": 1.0}, step=1)
    resumed.log_metrics({"acc": 0.9}, step=1)
    resumed.finalize("success")
    header, rows = read_csv(_metrics_path(resumed))
    assert header == ["acc", "loss", "step"]
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [("1", "1.0", ""), ("1", "", "0.9")]
    kept = os.path.join(resumed.log_dir, "metrics.previous-1.csv")
    assert read_csv(kept)[1] == [{"step": "0", "loss": "2.0"}]  # nothing the first run wrote is lost


def test_the_same_logger_after_finalize_appends_without_warning(tmp_path, recwarn):
    logger = CSVLogger(tmp_path, version=0)
    logger.log_metrics({"loss": 2.0}, step=0)
    logger.finalize("success")
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.finalize("success")
    assert [r["loss"] for r in read_csv(_metrics_path(logger))[1]] == ["2.0", "1.0"]
    assert not [w for w in recwarn if "exists" in str(w.message)]


def test_steps_are_counted_by_the_logger_when_not_given(tmp_path):
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=None)
    logger.log_metrics({"a": 1})
    logger.log_metrics({"a": 2})
    logger.log_metrics({"a": 3}, step=10)
    logger.log_metrics({"a": 4})
    assert [row["step"] for row in logger.experiment.metrics] == [0, 1, 10, 11]
    logger.finalize("success")
    assert [r["step"] for r in read_csv(logger.experiment.metrics_file_path)[1]] == ["0", "1", "10", "11"]


def test_columns_sorted_and_widened_across_flushes(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"c": 0.1})
    logger.log_metrics({"b": 0.3})
    logger.save()
    logger.log_metrics({"a": 0.5})
    logger.save()
    header, rows = read_csv(_metrics_path(logger))
    assert header == ["a", "b", "c", "step"]
    assert rows == [
        {"a": "", "b": "", "c": "0.1", "step": "0"},
        {"a": "", "b": "0.3", "c": "", "step": "1"},
        {"a": "0.5", "b": "", "c": "", "step": "2"},
    ]


def test_experiment_is_the_writer_on_rank_zero_and_a_no_op_elsewhere(tmp_path, monkeypatch):
    logger = CSVLogger(tmp_path)
    logger.experiment.log_metrics({"x": 1.0})
    logger.experiment.save()
    assert read_csv(logger.experiment.metrics_file_path)[1] == [{"step": "0", "x": "1.0"}]
    other = CSVLogger(tmp_path / "other")
    other.set_global_rank(1)
    other.experiment.log_metrics({"x": 1.0})  # does nothing, raises nothing
    other.experiment.save()
    assert other.experiment is not None
    assert not (tmp_path / "other").exists()


def test_a_row_cut_short_by_an_earlier_crash_stays_in_the_kept_file(tmp_path):
    folder = tmp_path / "fabric_logs" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("step,loss\n0,2.0\n1,1.2")  # "1,1.25\n" was being written
    logger = CSVLogger(tmp_path, version=0)
    with pytest.warns(UserWarning, match="metrics.previous-1.csv"):
        logger.log_metrics({"loss": 0.5}, step=1)
    logger.finalize("success")
    assert read_csv(str(folder / "metrics.csv"))[1] == [{"loss": "0.5", "step": "1"}]
    assert (folder / "metrics.previous-1.csv").read_text() == "step,loss\n0,2.0\n1,1.2"


def test_a_failed_rewrite_leaves_the_previous_file_whole(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n0,1.0\n")

    def crash_half_way(handle):
        handle.write("step,loss,acc\n0,1.0,")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(str(path), crash_half_way)
    assert path.read_text() == "step,loss\n0,1.0\n"
    assert os.listdir(tmp_path) == ["metrics.csv"]


def test_hparams_yaml_keeps_nesting_and_merges_calls(tmp_path):
    @dataclasses.dataclass
    class Optim:
        name: str = "adamw"
        betas: tuple = (0.9, 0.95)

    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(argparse.Namespace(lr=0.1, optim=Optim(), tags={"b", "a"}, weights=torch.tensor([1.0, 2.0])))
    logger.log_hyperparams({"lr": 0.05, "model": {"depth": 4, "act": None}, "use_amp": True})
    assert os.listdir(logger.log_dir) == ["hparams.yaml"]  # written at once, before any metric
    with open(os.path.join(logger.log_dir, "hparams.yaml")) as handle:
        assert yaml.safe_load(handle) == {
            "lr": 0.05,
            "optim": {"name": "adamw", "betas": [0.9, 0.95]},
            "tags": ["a", "b"],
            "weights": [1.0, 2.0],
            "model": {"depth": 4, "act": None},
            "use_amp": True,
        }
    logger.finalize("success")


def test_hparams_with_metrics_like_tensorboard(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1}, metrics={"best": 0.5})
    logger.finalize("success")
    assert read_csv(_metrics_path(logger))[1] == [{"step": "0", "best": "0.5"}]


def test_hparams_reject_other_types(tmp_path):
    with pytest.raises(TypeError, match=r"dict .* argparse.Namespace or a dataclass"):
        CSVLogger(tmp_path).log_hyperparams("lr=0.1")


def test_through_fabric(tmp_path):
    from fabric_core import Fabric

    logger = CSVLogger(tmp_path)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=logger)
    assert fabric.logger is logger
    fabric.log("loss", torch.tensor(0.25, requires_grad=True) * 2)
    fabric.log_dict({"loss": 0.125, "acc": torch.tensor(1)})
    fabric.logger.finalize("success")
    _, rows = read_csv(_metrics_path(logger))
    assert rows == [{"step": "0", "loss": "0.5", "acc": ""}, {"step": "1", "loss": "0.125", "acc": "1"}]


def test_fabric_passes_no_step_and_each_logger_counts_its_own(tmp_path):
    from fabric_core import Fabric

    early, late = CSVLogger(tmp_path, name="early"), CSVLogger(tmp_path, name="late")
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[early])
    fabric.log("x", 1.0)
    fabric.log("x", 2.0)
    fabric._loggers.append(late)  # a logger that joins later starts at its own step 0
    fabric.log("x", 3.0)
    fabric.log("x", 4.0, step=7)
    for logger in (early, late):
        logger.finalize("success")
    assert [r["step"] for r in read_csv(_metrics_path(early))[1]] == ["0", "1", "2", "7"]
    assert [r["step"] for r in read_csv(_metrics_path(late))[1]] == ["0", "7"]


def test_flush_schedule_counts_distinct_steps_and_time():
    now = [0.0]
    schedule = FlushSchedule(every_n_steps=2, every_n_seconds=5, clock=lambda: now[0])
    assert [schedule.record(s) for s in (0, 0, 0)] == [False, False, False]
    assert schedule.record(1) is True
    schedule.flushed()
    assert schedule.record(2) is False
    now[0] = 5.0
    assert schedule.record(2) is True
