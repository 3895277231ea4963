"""Exact resume with 2 processes: stop at step k, resume in new processes, match the uninterrupted run bit for bit."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]  # several multi-process jobs per test

TRAIN = r"""
import json, random, sys
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from fabric_core import Fabric

TOTAL = 14  # steps: 2 epochs of 7 batches per rank

def train(fabric, mode, path, stop_at):
    fabric.seed_everything(123 + fabric.global_rank)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model, optimizer = fabric.setup(model, optimizer)
    data = TensorDataset(torch.arange(28 * 4, dtype=torch.float32).view(28, 4) / 100, torch.arange(28, dtype=torch.float32))
    loader = fabric.setup_dataloaders(DataLoader(data, batch_size=2, shuffle=True))
    state = {"model": model, "optimizer": optimizer, "step": 0, "resume": fabric.exact_resume(loader)}
    if mode == "resume":
        fabric.load(path, state)
    step = state["step"]
    trace = []
    while step < TOTAL:
        for x, y in loader:
            noise = random.random() + float(np.random.rand())  # python and numpy RNG use matters too
            loss = (model(x).squeeze(1) - y).pow(2).mean() * (1 + noise * 1e-3)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            step += 1
            trace.append([step, x[:, 0].tolist()])
            if mode == "stop" and step == stop_at:
                state["step"] = step
                fabric.save(path, state)
                return None
            if step == TOTAL:
                break
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"weights": weights.tolist(), "trace": trace}

if __name__ == "__main__":
    mode, path, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
    print("RESULT", json.dumps(fabric.launch(train, mode, path, stop_at)))
"""


def _result(proc):
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.split(" ", 1)[1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, preloaded_python):
    from conftest import run_script

    tmp = tmp_path_factory.mktemp("full")
    return _result(run_script(tmp, TRAIN, "full", str(tmp / "unused.pt"), "0", preloaded=preloaded_python))


@pytest.mark.parametrize("stop_at", [7, 10])  # at the epoch boundary; in the middle of the second epoch
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(preloaded_script_runner, tmp_path, uninterrupted, stop_at):
    path = str(tmp_path / "ckpt.pt")
    full = uninterrupted
    assert _result(preloaded_script_runner(TRAIN, "stop", path, str(stop_at))) is None
    resumed = _result(preloaded_script_runner(TRAIN, "resume", path, "0"))
    assert resumed["trace"] == full["trace"][stop_at:]  # the same batches, in the same order
    assert resumed["weights"] == full["weights"]  # bit for bit


def test_resume_with_a_different_world_size_is_refused(preloaded_script_runner, tmp_path):
    path = str(tmp_path / "ckpt.pt")
    _result(preloaded_script_runner(TRAIN, "stop", path, "3"))
    single = TRAIN.replace('Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)', 'Fabric(accelerator="cpu")')
    proc = preloaded_script_runner(single, "resume", path, "0")
    assert proc.returncode != 0
    assert "same number of processes" in proc.stderr
