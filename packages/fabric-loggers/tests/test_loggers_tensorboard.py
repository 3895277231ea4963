"""TensorBoardLogger: what TensorBoard's own EventAccumulator reads back from the event files."""

from __future__ import annotations

import argparse
import os
import pathlib

import pytest
import torch
from fabric_loggers import TensorBoardLogger
from fabric_loggers._flush import FlushSchedule
from loggers_testing import event_accumulator, hparam_values, hparams_plugin_data, scalars


def test_scalars_with_their_steps(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    for step in range(4):
        logger.log_metrics({"loss": 1.0 / (step + 1), "acc": step * 0.25}, step=step * 10)
    logger.finalize("success")
    assert scalars(logger.log_dir, "loss") == [(0, 1.0), (10, 0.5), (20, pytest.approx(1 / 3)), (30, 0.25)]
    assert scalars(logger.log_dir, "acc") == [(0, 0.0), (10, 0.25), (20, 0.5), (30, 0.75)]


def test_prefix_is_joined_with_a_dash(tmp_path):
    logger = TensorBoardLogger(tmp_path, prefix="train")
    logger.log_metrics({"loss": 2.0}, step=0)
    logger.finalize("success")
    assert "train-loss" in event_accumulator(logger.log_dir).Tags()["scalars"]


def test_numpy_and_tensor_values_are_accepted(tmp_path):
    import numpy as np

    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"a": np.float32(0.5), "b": torch.tensor([3]), "c": True}, step=np.int64(2))
    logger.finalize("success")
    assert scalars(logger.log_dir, "a") == [(2, 0.5)]
    assert scalars(logger.log_dir, "b") == [(2, 3.0)]
    assert scalars(logger.log_dir, "c") == [(2, 1.0)]


def test_hyperparams_flattened_typed_and_stringified(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    params = {
        "lr": 0.001,
        "epochs": 3,
        "amsgrad": False,
        "name": "adam",
        "model": {"layers": 4, "act": {"kind": "gelu"}},
        "betas": (0.9, 0.999),
        "nothing": None,
        "path": pathlib.PurePosixPath("/data/x"),
        "scale": torch.tensor(2.5),
    }
    logger.log_hyperparams(params)
    logger.finalize("success")
    assert hparam_values(logger.log_dir) == {
        "lr": 0.001,
        "epochs": 3.0,
        "amsgrad": False,
        "name": "adam",
        "model/layers": 4.0,
        "model/act/kind": "gelu",
        "betas": "(0.9, 0.999)",
        "nothing": "None",
        "path": "/data/x",
        "scale": 2.5,
    }
    data = hparams_plugin_data(logger.log_dir)
    types = {info.name: info.type for info in data["experiment"].hparam_infos}
    from tensorboard.plugins.hparams import api_pb2

    assert types["amsgrad"] == api_pb2.DATA_TYPE_BOOL
    assert types["lr"] == api_pb2.DATA_TYPE_FLOAT64
    assert types["name"] == api_pb2.DATA_TYPE_STRING
    # No metrics given: the default hp_metric placeholder makes the run show in the HPARAMS tab.
    assert [info.name.tag for info in data["experiment"].metric_infos] == ["hp_metric"]
    assert scalars(logger.log_dir, "hp_metric") == [(0, -1.0)]
    assert data["end"].status == api_pb2.STATUS_SUCCESS


def test_hyperparams_from_namespace_with_metrics(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams(argparse.Namespace(lr=0.1, opt=argparse.Namespace(name="sgd")), metrics={"val_acc": 0.75})
    logger.log_metrics({"val_acc": 0.8}, step=5)
    logger.finalize("failed")
    assert hparam_values(logger.log_dir) == {"lr": 0.1, "opt/name": "sgd"}
    data = hparams_plugin_data(logger.log_dir)
    assert [info.name.tag for info in data["experiment"].metric_infos] == ["val_acc"]
    assert scalars(logger.log_dir, "val_acc") == [(0, 0.75), (5, pytest.approx(0.8))]
    from tensorboard.plugins.hparams import api_pb2

    assert data["end"].status == api_pb2.STATUS_FAILURE
    assert "hp_metric" not in event_accumulator(logger.log_dir).Tags()["scalars"]


def test_a_second_hyperparams_call_warns_because_tensorboard_keeps_the_first(tmp_path):
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.1, "seed": 1})
    with pytest.warns(UserWarning, match="only the first hyperparameters"):
        logger.log_hyperparams({"seed": 2}, metrics={"best": 0.5})
    logger.finalize("success")
    assert hparam_values(logger.log_dir) == {"lr": 0.1, "seed": 1.0}
    assert scalars(logger.log_dir, "best") == [(0, 0.5)]


def test_hyperparams_reject_other_types(tmp_path):
    with pytest.raises(TypeError, match=r"dict .* argparse.Namespace or a dataclass"):
        TensorBoardLogger(tmp_path).log_hyperparams([("lr", 0.1)])


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(4, 3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.encoder(x)))


def _graph_node_names(log_dir: str) -> list[str]:
    return [node.name for node in event_accumulator(log_dir).Graph().node]


def test_log_graph_traces_the_model(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_graph(_Net(), torch.randn(2, 4))
    logger.finalize("success")
    names = _graph_node_names(logger.log_dir)
    assert any("encoder" in name for name in names)
    assert any("head" in name for name in names)


def test_log_graph_uses_example_input_array_and_unwraps_fabric(tmp_path):
    from fabric_core import Fabric

    fabric = Fabric(accelerator="cpu", devices=1)
    model = _Net()
    model.example_input_array = torch.randn(1, 4)
    wrapped = fabric.setup(model)
    logger = TensorBoardLogger(tmp_path)
    logger.log_graph(wrapped)
    logger.finalize("success")
    assert any("encoder" in name for name in _graph_node_names(logger.log_dir))


def test_log_graph_without_an_input_warns_how_to_give_one_and_skips(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    with pytest.warns(UserWarning, match="example_input_array"):
        logger.log_graph(_Net())
    assert os.listdir(logger.log_dir) == []  # nothing was written


def test_sub_dir_and_expanded_root_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FABRIC_TEST_LOGS", str(tmp_path / "from_env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    logger = TensorBoardLogger("$FABRIC_TEST_LOGS/tb", name="exp", version=2, sub_dir="train")
    assert logger.sub_dir == "train"
    assert logger.log_dir == os.path.join(str(tmp_path), "from_env", "tb", "exp", "version_2", "train")
    logger.log_metrics({"loss": 1.5})
    logger.log_metrics({"loss": 0.5})
    logger.finalize("success")
    assert scalars(logger.log_dir, "loss") == [(0, 1.5), (1, 0.5)]  # steps counted by the logger
    home = TensorBoardLogger("~/logs", name=None, version=0)
    assert home.log_dir == os.path.join(str(tmp_path), "home", "logs", "version_0")


def test_experiment_on_other_ranks_is_a_no_op_object(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.set_global_rank(1)
    experiment = logger.experiment
    assert experiment is not None
    experiment.add_scalar("x", 1.0, 0)  # does nothing
    experiment.add_image("img", torch.zeros(3, 2, 2))
    assert experiment["anything"] is experiment
    assert not os.path.exists(tmp_path / "fabric_logs")


@pytest.fixture
def flush_calls(monkeypatch):
    """Count the sink's flushes. TensorBoard's writer thread also writes on its own (the stub GFile does
    not buffer), so "not on disk yet" cannot be observed; that the logger forces a flush on schedule can."""
    from fabric_loggers import tensorboard as module

    calls: list[int] = []
    original = module._TensorBoardSink._flush

    def counting(self):
        calls.append(1)
        original(self)

    monkeypatch.setattr(module._TensorBoardSink, "_flush", counting)
    return calls


def test_flush_every_n_steps_puts_scalars_on_disk_without_finalize(tmp_path, flush_calls):
    logger = TensorBoardLogger(tmp_path, flush_logs_every_n_steps=3)
    logger.log_metrics({"x": 0.0}, step=0)
    logger.log_metrics({"x": 1.0}, step=1)
    logger.log_metrics({"y": 1.0}, step=1)  # the same step again does not count
    assert flush_calls == []
    logger.log_metrics({"x": 2.0}, step=2)
    assert len(flush_calls) == 1
    assert scalars(logger.log_dir, "x") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    for step in range(3, 6):
        logger.log_metrics({"x": float(step)}, step=step)
    assert len(flush_calls) == 2
    logger.finalize("success")


def test_flush_every_n_seconds(tmp_path, flush_calls):
    now = [0.0]
    logger = TensorBoardLogger(tmp_path, flush_logs_every_n_steps=None, flush_logs_every_n_seconds=30)
    assert logger._writer_kwargs["flush_secs"] == 30  # TensorBoard's own timer follows the same period
    logger._schedule = FlushSchedule(None, 30, clock=lambda: now[0])
    logger.log_metrics({"x": 0.0}, step=0)
    now[0] = 29.0
    logger.log_metrics({"x": 1.0}, step=1)
    assert flush_calls == []
    now[0] = 30.0
    logger.log_metrics({"x": 2.0}, step=2)
    assert len(flush_calls) == 1
    assert [step for step, _ in scalars(logger.log_dir, "x")] == [0, 1, 2]
    now[0] = 59.0
    logger.log_metrics({"x": 3.0}, step=3)
    assert len(flush_calls) == 1
    logger.finalize("success")


def test_save_flushes_and_logging_after_finalize_starts_a_new_event_file(tmp_path):
    logger = TensorBoardLogger(tmp_path, flush_logs_every_n_steps=None)
    logger.log_metrics({"x": 1.0}, step=0)
    logger.save()
    assert scalars(logger.log_dir, "x") == [(0, 1.0)]
    logger.finalize("success")
    logger.log_metrics({"x": 2.0}, step=1)
    logger.finalize("success")
    assert len([f for f in os.listdir(logger.log_dir) if f.startswith("events.out.tfevents")]) == 2
    assert scalars(logger.log_dir, "x") == [(0, 1.0), (1, 2.0)]


def test_experiment_is_the_summary_writer_for_everything_else(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.experiment.add_text("notes", "hello", global_step=0)
    logger.finalize("success")
    assert "notes/text_summary" in event_accumulator(logger.log_dir).Tags()["tensors"]


def test_through_fabric_log_and_log_dict(tmp_path):
    from fabric_core import Fabric

    logger = TensorBoardLogger(tmp_path)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[logger])
    assert fabric.logger is logger
    assert fabric.loggers == [logger]
    weight = torch.tensor(2.0, requires_grad=True)
    fabric.log("loss", weight * 3)  # a tensor in the autograd graph: core detaches it; step 0
    fabric.log_dict({"loss": torch.tensor(5.0), "lr": 0.1})  # step 1
    fabric.log("loss", 4.0, step=10)
    fabric.log("loss", 3.0)  # counts on from the given step
    fabric.logger.finalize("success")
    assert scalars(logger.log_dir, "loss") == [(0, 6.0), (1, 5.0), (10, 4.0), (11, 3.0)]
    assert scalars(logger.log_dir, "lr") == [(1, pytest.approx(0.1))]
