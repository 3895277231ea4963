"""TensorBoard and CSV runs on fsspec URLs (``memory://`` here; ``s3://`` goes through the same code)."""

from __future__ import annotations

import csv
import io
import uuid

import fsspec
import pytest
import yaml
from fabric_loggers import CSVLogger, TensorBoardLogger


@pytest.fixture
def root() -> str:
    return f"memory://fabric-loggers-{uuid.uuid4().hex}"


def _read_csv(url: str) -> tuple[list[str], list[dict[str, str]]]:
    with fsspec.open(url, "r", newline="") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        return list(reader.fieldnames or []), list(reader)


def test_csv_rows_columns_and_hparams_on_a_url(root):
    logger = CSVLogger(root, flush_logs_every_n_steps=1)
    logger.log_hyperparams({"lr": 0.1, "model": {"depth": 2}})
    logger.log_metrics({"loss": 2.0})
    logger.log_metrics({"loss": 1.0, "acc": 0.5})
    logger.finalize("success")
    assert logger.log_dir == f"{root}/fabric_logs/version_0"
    header, rows = _read_csv(f"{logger.log_dir}/metrics.csv")
    assert header == ["acc", "loss", "step"]
    assert rows == [{"acc": "", "loss": "2.0", "step": "0"}, {"acc": "0.5", "loss": "1.0", "step": "1"}]
    with fsspec.open(f"{logger.log_dir}/hparams.yaml", "r") as handle:
        assert yaml.safe_load(handle) == {"lr": 0.1, "model": {"depth": 2}}

    second = CSVLogger(root)
    second.log_metrics({"loss": 0.5})
    second.finalize("success")
    assert second.log_dir == f"{root}/fabric_logs/version_1"  # the next free version, found by listing the URL

    again = CSVLogger(root, version=0)
    with pytest.warns(UserWarning, match="metrics.previous-1.csv"):
        again.log_metrics({"loss": 0.25})
    again.finalize("success")
    assert _read_csv(f"{again.log_dir}/metrics.csv")[1] == [{"loss": "0.25", "step": "0"}]
    assert _read_csv(f"{again.log_dir}/metrics.previous-1.csv")[1] == rows


def test_tensorboard_scalars_on_a_url_read_back_with_tensorboards_reader(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(root, name="tb", sub_dir="train")
    logger.log_metrics({"loss": 1.5})
    logger.log_metrics({"loss": 0.5}, step=7)
    logger.finalize("success")
    assert logger.log_dir == f"{root}/tb/version_0/train"
    accumulator = EventAccumulator(logger.log_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [(event.step, event.value) for event in accumulator.Scalars("loss")] == [(0, 1.5), (7, 0.5)]
