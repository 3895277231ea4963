"""``Fabric(loggers=["tensorboard", "csv"])`` and ``fabric_core.loggers``: resolved through the entry points."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_loggers import CSVLogger, TensorBoardLogger


def test_names_build_the_registered_loggers_with_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=["tensorboard", "csv"])
    tensorboard, csv_logger = fabric.loggers
    assert isinstance(tensorboard, TensorBoardLogger) and isinstance(csv_logger, CSVLogger)
    fabric.log("loss", 0.5)
    csv_logger.finalize("success")
    tensorboard.finalize("success")
    assert (tmp_path / "logs" / "csv" / "version_0" / "metrics.csv").read_text() == "loss,step\n0.5,0\n"
    assert any(
        p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs" / "tensorboard" / "version_0").iterdir()
    )


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        MisconfigurationError, match=r"Unknown logger 'tensorbord'; valid names: .*'csv'.*'tensorboard'"
    ):
        Fabric(accelerator="cpu", loggers=["tensorbord"])


def test_core_exports_the_classes_lazily_under_lightnings_path():
    import fabric_core.loggers as loggers

    assert loggers.TensorBoardLogger is TensorBoardLogger
    assert loggers.CSVLogger is CSVLogger
    from fabric_core.loggers import Logger  # noqa: F401 - the interface, from core itself

    with pytest.raises(AttributeError, match="NoSuchLogger"):
        loggers.NoSuchLogger


def test_importing_core_loggers_imports_no_logger_package_or_tracker():
    code = (
        "import sys, fabric_core.loggers, fabric_loggers; "
        "print(sorted(m for m in ('mlflow', 'wandb', 'comet_ml', 'dvclive', 'dvc', 'tensorboard', 'yaml') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


class _Recording(CSVLogger):
    """A CSV logger that asks for checkpoints and records the paths it was handed."""

    def __init__(self, root_dir, wants: bool) -> None:
        super().__init__(root_dir)
        self._wants = wants
        self.handed: list[str] = []

    @property
    def wants_checkpoints(self) -> bool:
        return self._wants

    def log_checkpoint(self, path: str) -> None:
        assert os.path.exists(path), "handed over before the file was written"
        self.handed.append(path)


@pytest.mark.parametrize("async_", [False, True])
def test_fabric_save_hands_finished_checkpoints_only_to_loggers_that_ask(tmp_path, async_):
    import torch
    from loggers_testing import wait_for

    asking, silent = _Recording(tmp_path / "a", wants=True), _Recording(tmp_path / "b", wants=False)
    fabric = Fabric(accelerator="cpu", devices=1, loggers=[asking, silent])
    model = fabric.setup(torch.nn.Linear(2, 1))
    handle = fabric.save(tmp_path / "last.ckpt", {"model": model}, async_=async_)
    if async_:
        handle.result()
        wait_for(lambda: asking.handed, 60, "the checkpoint handed over after the background write")
    assert asking.handed == [str(tmp_path / "last.ckpt")]
    assert silent.handed == []
