"""TensorBoardLogger's scalar events are the ones ``SummaryWriter.add_scalar`` writes, field for field."""

from __future__ import annotations

import glob
import os

import torch
from fabric_loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch.utils.tensorboard import SummaryWriter

STEPS = [
    (0, {"loss": 1 / 3, "acc": 1}),
    (1, {"loss": 0.25, "acc": torch.tensor(0.5), "lr": 1e-300}),
    (7, {"loss": float("nan"), "big": 2**40, "neg": -float("inf")}),
]


def scalar_events(folder) -> list[str]:
    """Every scalar event of the event file in ``folder``, wall time cleared, as protobuf text."""
    (path,) = glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True)
    out = []
    for event in EventFileLoader(path).Load():
        if event.HasField("summary"):
            event.wall_time = 0
            out.append(str(event))
    return out


def test_scalar_events_match_add_scalar(tmp_path):
    direct = SummaryWriter(str(tmp_path / "direct"))
    for step, metrics in STEPS:
        for name, value in metrics.items():
            direct.add_scalar(name, value, global_step=step)
    direct.close()

    logger = TensorBoardLogger(tmp_path / "logger", name=None, version=0)
    for step, metrics in STEPS:
        logger.log_metrics(metrics, step=step)
    logger.finalize("success")

    expected = scalar_events(tmp_path / "direct")
    assert len(expected) == 8
    assert scalar_events(tmp_path / "logger") == expected
