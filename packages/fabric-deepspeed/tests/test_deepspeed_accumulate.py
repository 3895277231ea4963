"""fabric.accumulate under DeepSpeed on the CPU, two real processes: equal to one large batch per window.

One launched job runs every leg (DeepSpeed's start-up is paid once): the training loop owning the
boundary (stages 1 and 2, DeepSpeed's default here) and the engine counting micro-batches itself
(``gradient_accumulation_steps=3``), whose boundary fabric.accumulate sets so the short last window
of an epoch still steps; a mismatching ``steps`` is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]

SCRIPT = r"""
import json, os, sys, traceback
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_deepspeed import DeepSpeedStrategy

B, N, BATCHES, EPOCHS = 2, 3, 7, 2  # windows of 3, 3 and 1 per epoch

def make():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

def train(fabric, steps=N):
    world = fabric.world_size
    torch.manual_seed(0)
    x = torch.randn(world * B * BATCHES, 4)
    y = torch.randn(world * B * BATCHES, 2)
    module = make()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=B))
    boundaries = 0
    for _ in range(EPOCHS):
        for bx, by in loader:
            with fabric.accumulate(model, steps=steps, dataloader=loader) as step:
                fabric.backward(nn.functional.mse_loss(model(bx), by))
                optimizer.step()
                optimizer.zero_grad()
            boundaries += step.boundary
    got = {k: v.detach().float() for k, v in module.state_dict().items()}
    shards = [list(DistributedSampler(range(len(x)), num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    ref = make()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(EPOCHS):
        for start in range(0, BATCHES, N):
            idx = [i for shard in shards for i in shard[start * B : min(start + N, BATCHES) * B]]
            ref_opt.zero_grad()
            nn.functional.mse_loss(ref(x[idx]), y[idx]).backward()
            ref_opt.step()
    expected = ref.state_dict()
    initial = make().state_dict()
    return {
        "max_diff": max((got[k] - expected[k]).abs().max().item() for k in expected),
        "moved": max((got[k] - initial[k]).abs().max().item() for k in expected),
        "boundaries": boundaries,
    }

fabric = Fabric(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=2))
fabric.launch()
out = {"rank": fabric.global_rank}
def leg(name, fn):
    try:
        out[name] = fn()
    except Exception:
        out[name] = {"error": traceback.format_exc()}

leg("loop_stage2", lambda: train(fabric))
# later Fabrics join this job's process group, as under torchrun
os.environ.update({"FABRIC_LAUNCHED": "1", "LOCAL_RANK": str(fabric.local_rank), "RANK": str(fabric.global_rank),
                   "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"})
def nested(**kwargs):
    f = Fabric(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(**kwargs))
    f.launch()
    return f
leg("loop_stage1", lambda: train(nested(stage=1)))
leg("engine_stage2", lambda: train(nested(stage=2, gradient_accumulation_steps=N)))
leg("engine_stage0", lambda: train(nested(stage=0, gradient_accumulation_steps=N)))
def mismatch():
    try:
        train(nested(stage=2, gradient_accumulation_steps=4))
    except MisconfigurationError as error:
        return str(error)
    return "not refused"
leg("mismatch", mismatch)
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
"""

_CLUSTER_VARS = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "FABRIC_LAUNCHED",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    folder = tmp_path_factory.mktemp("ds_accumulate")
    script = folder / "script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS and not k.startswith("TORCHELASTIC")}
    env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=840
    )
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and len(rows) == 2, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return {row["rank"]: row for row in rows}


def _leg(results: dict[int, dict], rank: int, name: str):
    value = results[rank][name]
    if isinstance(value, dict) and "error" in value:
        pytest.fail(f"rank {rank}, leg {name!r} failed:\n{value['error']}", pytrace=False)
    return value


@pytest.mark.parametrize("name", ["loop_stage2", "loop_stage1", "engine_stage2", "engine_stage0"])
def test_accumulated_weights_equal_one_large_batch(results: dict[int, dict], name: str) -> None:
    for rank in (0, 1):
        leg = _leg(results, rank, name)
        assert leg["moved"] > 1e-3
        assert leg["max_diff"] < 1e-6, f"rank {rank}: {leg['max_diff']}"
        assert leg["boundaries"] == 6  # 3 windows per epoch, the last one short


def test_a_steps_that_differs_from_the_engine_count_is_refused(results: dict[int, dict]) -> None:
    message = _leg(results, 0, "mismatch")
    assert "gradient_accumulation_steps=4" in message and "Use steps=4" in message, message
