"""fabric.profile: a loadable Chrome/TensorBoard trace per rank, in the folder a user would look in."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from convenience_jobs import job, part
from fabric_core import Fabric
from fabric_core.plugins.logger import Logger


class FolderLogger(Logger):
    """A minimal file logger: only its folder matters here."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @property
    def name(self) -> str:
        return "run"

    @property
    def version(self) -> int:
        return 0

    @property
    def log_dir(self) -> str | None:
        return None if self.folder is None else str(self.folder)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def _work(steps: int, prof) -> None:
    model = torch.nn.Linear(16, 16)
    for _ in range(steps):
        with torch.profiler.record_function("train_step"):
            model(torch.randn(8, 16)).sum().backward()
        if prof is not None:
            prof.step()


def _traces(folder: Path) -> list[dict]:
    files = sorted(folder.glob("rank0.*.pt.trace.json"))
    return [json.loads(f.read_text()) for f in files]


def test_without_logger_the_default_folder_is_named_in_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    fabric = Fabric(accelerator="cpu", devices=1)
    with caplog.at_level(logging.WARNING), fabric.profile() as prof:
        _work(2, None)
    assert isinstance(prof, torch.profiler.profile)
    folder = tmp_path / "fabric_profiles"
    assert str(folder) in caplog.text
    (trace,) = _traces(folder)
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "train_step" in names


# torch's own notice on the second profiling cycle (events are per cycle unless acc_events=True); one
# trace per active window is exactly what this test asks for, so that one upstream message is expected.
@pytest.mark.filterwarnings("ignore:Warning. Profiler clears events at the end of each cycle:UserWarning")
def test_traces_go_to_the_first_loggers_folder_one_per_active_window(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[FolderLogger(tmp_path / "logs"), FolderLogger(None)])
    with fabric.profile(schedule={"wait": 1, "warmup": 1, "active": 2, "repeat": 2}) as prof:
        _work(8, prof)
    traces = _traces(tmp_path / "logs")
    assert len(traces) == 2
    for trace in traces:
        assert sum(event.get("name") == "train_step" for event in trace["traceEvents"]) == 2


def test_output_dir_wins_and_a_logger_without_folder_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[FolderLogger(tmp_path / "logs")])
    with fabric.profile(output_dir=tmp_path / "mine", record_shapes=True):
        _work(1, None)
    assert len(_traces(tmp_path / "mine")) == 1 and not (tmp_path / "logs").exists()
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[FolderLogger(None)])
    with fabric.profile():
        _work(1, None)
    assert len(_traces(tmp_path / "fabric_profiles")) == 1


def test_bad_schedules_are_refused() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    with pytest.raises(ValueError, match="unknown keys \\['steps'\\]"):
        with fabric.profile(schedule={"steps": 3}):
            pass
    with pytest.raises(TypeError, match="schedule must be a dict"):
        with fabric.profile(schedule=3):
            pass


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_each_rank_writes_its_own_trace(preloaded_python) -> None:
    results = job("ddp", 2, preloaded_python)
    files = [part(results, rank, "profile") for rank in (0, 1)]
    for rank, names in enumerate(files):
        assert len(names) == 1 and names[0].startswith(f"rank{rank}.") and names[0].endswith(".pt.trace.json")
