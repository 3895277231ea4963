"""``Fabric(loggers=["tensorboard", "csv"])`` and ``fabric_core.loggers``: resolved through the entry points."""

from __future__ import annotations

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
        "print(sorted(m for m in ('mlflow', 'wandb', 'comet_ml', 'tensorboard', 'yaml') if m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
