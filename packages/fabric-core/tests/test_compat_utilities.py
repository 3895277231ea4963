"""Utilities scripts import from lightning.fabric.utilities, at the same paths under fabric_core.utilities."""

from __future__ import annotations

import json
import logging
import warnings
from collections import namedtuple

import pytest
import torch
from fabric_core import Fabric
from fabric_core.utilities import (
    AttributeDict,
    SpikeDetection,
    Throughput,
    ThroughputMonitor,
    get_available_flops,
    measure_flops,
    rank_zero_debug,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from fabric_core.utilities.spike import TrainingSpikeException
from torch import nn


@pytest.fixture
def pinned_rank():
    """Pin ``rank_zero_only.rank`` for a test and restore detection afterwards."""

    def pin(rank: int | None) -> None:
        rank_zero_only.rank = rank

    yield pin
    rank_zero_only.rank = None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 0),
        ({"RANK": "3"}, 3),
        ({"LOCAL_RANK": "2", "SLURM_PROCID": "5"}, 2),  # LOCAL_RANK before SLURM_PROCID
        ({"SLURM_PROCID": "5", "JSM_NAMESPACE_RANK": "7"}, 5),
        ({"JSM_NAMESPACE_RANK": "7"}, 7),
    ],
)
def test_rank_is_detected_from_the_launcher_environment(monkeypatch, env, expected):
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert rank_zero_only.rank == expected


def test_rank_zero_only_runs_on_rank_zero_and_returns_default_elsewhere(pinned_rank):
    calls = []

    @rank_zero_only
    def record(x):
        calls.append(x)
        return x

    pinned_rank(0)
    assert record(1) == 1
    pinned_rank(1)
    assert record(2) is None
    assert rank_zero_only(lambda: "value", default="fallback")() == "fallback"
    assert calls == [1]


def test_rank_zero_log_and_warn_only_on_rank_zero(pinned_rank, caplog):
    caplog.set_level(logging.DEBUG, logger="fabric_core.utilities.rank_zero")
    pinned_rank(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rank_zero_warn("hidden")
    rank_zero_info("hidden info")
    assert not caplog.records
    pinned_rank(0)
    with pytest.warns(UserWarning, match="shown"):
        rank_zero_warn("shown")
    rank_zero_info("info %d", 1)
    rank_zero_debug("debug")
    assert [r.getMessage() for r in caplog.records] == ["info 1", "debug"]


def test_attribute_dict_reads_writes_and_saves_as_a_dict(tmp_path):
    state = AttributeDict(step=0, model="m")
    state.step += 1
    state.extra = 5
    assert state == {"step": 1, "model": "m", "extra": 5}
    del state.extra
    with pytest.raises(AttributeError, match="missing"):
        _ = state.missing
    assert repr(state).splitlines() == ['"model": m', '"step":  1']
    torch.save(state, tmp_path / "s.pt")
    assert torch.load(tmp_path / "s.pt", weights_only=False) == {"step": 1, "model": "m"}
    from fabric_core.utilities.data import AttributeDict as FromData

    assert FromData is AttributeDict


def test_throughput_rates_over_the_window():
    throughput = Throughput(window_size=3, world_size=2, available_flops=100.0, using_sparse_model=False)
    for i in range(1, 4):
        throughput.update(time=float(i), batches=i, samples=4 * i, lengths=40 * i, flops=50)
    metrics = throughput.compute()
    assert metrics["time"] == 3.0 and metrics["samples"] == 12 and metrics["lengths"] == 120
    assert metrics["device/batches_per_sec"] == pytest.approx(1.0)
    assert metrics["device/samples_per_sec"] == pytest.approx(4.0)
    assert metrics["samples_per_sec"] == pytest.approx(8.0)
    assert metrics["device/items_per_sec"] == pytest.approx(40.0)
    # 2 updates of 50 FLOPs per device within the 2 s the window spans
    assert metrics["device/flops_per_sec"] == pytest.approx(50.0)
    assert metrics["flops_per_sec"] == pytest.approx(100.0)
    assert metrics["device/mfu"] == pytest.approx(0.5)


def test_throughput_refuses_totals_that_do_not_increase():
    throughput = Throughput(window_size=2)
    throughput.update(time=1.0, batches=1, samples=1)
    with pytest.raises(ValueError, match="increase"):
        throughput.update(time=1.0, batches=2, samples=2)
    with pytest.raises(ValueError, match="samples .* greater or equal than batches"):
        throughput.update(time=2.0, batches=5, samples=4)
    throughput.reset()
    throughput.update(time=0.5, batches=1, samples=1)  # after reset, anything goes again


def test_throughput_monitor_logs_through_fabric():
    logged = []

    class Recorder:
        def __init__(self):
            self.name, self.version, self.root_dir, self.log_dir = "r", 0, None, None

        def log_metrics(self, metrics, step=None):
            logged.append((dict(metrics), step))

        def log_hyperparams(self, params):
            pass

        def finalize(self, status):
            pass

        def save(self):
            pass

    fabric = Fabric(accelerator="cpu", loggers=[Recorder()])
    monitor = ThroughputMonitor(fabric, window_size=2)
    assert monitor.available_flops is None  # CPUs have no known peak
    for i in range(1, 3):
        monitor.update(time=float(i), batches=i, samples=2 * i)
        monitor.compute_and_log()
    assert [step for _, step in logged] == [0, 1]
    assert logged[-1][0]["device/samples_per_sec"] == pytest.approx(2.0)


def test_measure_flops_counts_forward_and_backward():
    with torch.device("meta"):
        model = nn.Linear(8, 4, bias=False)
        x = torch.randn(2, 8)
    forward = measure_flops(model, lambda: model(x))
    assert forward == 2 * 2 * 8 * 4
    # backward computes the weight gradient only (the input needs none): one more matmul of the same size
    assert measure_flops(model, lambda: model(x), lambda y: y.sum()) == 2 * forward


def test_available_flops_unknown_on_cpu():
    assert get_available_flops(torch.device("cpu"), torch.float32) is None


def test_spike_detection_stops_on_a_spike_and_records_the_batches(tmp_path):
    fabric = Fabric(accelerator="cpu")
    detector = SpikeDetection(window=3, warmup=2, rtol=1.0, exclude_batches_path=tmp_path)
    for batch_idx, loss in enumerate([1.0, 0.9, 0.8, 0.85]):  # small rises are not spikes
        detector.on_train_batch_end(fabric, torch.tensor(loss), None, batch_idx)
    with pytest.raises(TrainingSpikeException, match="batch 4"):
        detector.on_train_batch_end(fabric, torch.tensor(5.0), None, 4)
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [3, 4]


def test_spike_detection_non_finite_and_state_round_trip(tmp_path):
    fabric = Fabric(accelerator="cpu")
    detector = SpikeDetection(warmup=0, exclude_batches_path=tmp_path / "skip.json")
    detector.on_train_batch_end(fabric, torch.tensor(1.0), None, 0)
    restored = SpikeDetection()
    restored.load_state_dict(detector.state_dict())
    assert restored.running_mean == 1.0
    with pytest.raises(TrainingSpikeException):
        restored.on_train_batch_end(fabric, torch.tensor(float("nan")), None, 1)
    lenient = SpikeDetection(warmup=0, finite_only=False, exclude_batches_path=tmp_path)
    lenient.on_train_batch_end(fabric, torch.tensor(1.0), None, 0)
    lenient.on_train_batch_end(fabric, torch.tensor(float("nan")), None, 1)  # not a spike, not recorded
    assert lenient.running_mean == 1.0


def test_types_are_public_and_structural():
    from fabric_core.utilities.types import (
        _DEVICE,
        _PATH,
        CollectibleGroup,
        LRScheduler,
        Optimizable,
        ReduceOp,
        Steppable,
    )

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    assert isinstance(optimizer, Optimizable) and isinstance(optimizer, Steppable)
    assert isinstance(torch.optim.lr_scheduler.StepLR(optimizer, 1), LRScheduler)
    assert not isinstance(object(), CollectibleGroup)
    assert ReduceOp.SUM is torch.distributed.ReduceOp.SUM
    assert _PATH.__args__[0] is str and torch.device in _DEVICE.__args__


def test_unwrap_objects_takes_wrappers_off_a_collection():
    from fabric_core.wrappers import _unwrap_objects, unwrap_objects
    from torch.utils.data import DataLoader

    fabric = Fabric(accelerator="cpu")
    model, opt = nn.Linear(2, 2), None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(list(range(4)))
    f_model, f_opt = fabric.setup(model, opt)
    f_loader = fabric.setup_dataloaders(loader)
    Pair = namedtuple("Pair", ["model", "opt"])
    out = unwrap_objects({"a": [f_model, (f_opt, 3)], "b": Pair(f_model, f_opt), "c": f_loader})
    assert out["a"][0] is model and out["a"][1][0] is opt and out["a"][1][1] == 3
    assert isinstance(out["b"], Pair) and out["b"].model is model
    assert out["c"] is loader
    assert _unwrap_objects is unwrap_objects
