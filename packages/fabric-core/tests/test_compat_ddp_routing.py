"""LightningModule-style models under real DDP (2 processes): step methods go through DDP, replicas stay equal."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.multiprocess

STEP_METHODS_UNDER_DDP = r"""
import json, sys
import torch
from torch import nn
from fabric_core import Fabric

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self._fabric = None
        self.layer = nn.Linear(4, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch):
        loss = (self(batch) ** 2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch):
        return (self(batch) ** 2).mean()

    def helper(self, batch):
        return self.layer(batch).sum()

    def log(self, name, value):
        self._fabric.log(name, value)

class Logger:
    def __init__(self):
        self.values = []
    def log_metrics(self, metrics, step=None):
        self.values.append(metrics)
    def log_hyperparams(self, *args, **kwargs):
        pass

def work(fabric):
    torch.manual_seed(0)  # same initial weights on both ranks
    model = Model()
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.5))
    torch.manual_seed(100 + fabric.global_rank)  # different data on each rank
    for _ in range(3):
        loss = fmodel.training_step(torch.randn(8, 4) * (fabric.global_rank + 1))
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        fmodel.validation_step(torch.randn(2, 4))
    try:
        fmodel.helper(torch.randn(2, 4))
        bypass = "no error"
    except RuntimeError as err:
        bypass = str(err)
    weights = [p.detach().flatten().tolist() for p in model.parameters()]
    gathered = fabric.all_gather(torch.cat([p.detach().flatten() for p in model.parameters()]))
    out = {"rank": fabric.global_rank, "weights": weights, "equal": bool(torch.equal(gathered[0], gathered[1])),
           "logged": len(fabric.logger.values), "fabric_set": model._fabric is fabric, "bypass": bypass}
    sys.stdout.write("RESULT " + json.dumps(out) + "\n"); sys.stdout.flush()

if __name__ == "__main__":
    Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, loggers=Logger()).launch(work)
"""


def test_training_step_through_ddp_keeps_replicas_equal(preloaded_script_runner):
    proc = preloaded_script_runner(STEP_METHODS_UNDER_DDP, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        row["rank"]: row
        for row in (
            json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")
        )
    }
    assert sorted(rows) == [0, 1]
    assert rows[0]["weights"] == rows[1]["weights"]  # gradients were averaged by DDP in every step
    for row in rows.values():
        assert row["equal"]
        assert row["fabric_set"]
        assert row["logged"] == 3  # the model's own self.log reached Fabric's logger
        assert "mark_forward_method('helper')" in row["bypass"]
    assert "outside" not in proc.stderr  # no warning about running outside the wrapper
