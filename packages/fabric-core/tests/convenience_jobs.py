"""One real multi-process job per (strategy, process count) checking the conveniences together.

``job("ddp", 2, preloaded_python)`` runs ``SCRIPT`` under ``fabric.launch()`` once per test session (cached;
rank 0 starts as a fork of the ``preloaded_python`` server, see preloaded_python.py) and returns each rank's results; test_accumulate_multiprocess.py, test_gather_for_metrics.py,
test_split_between_processes.py and test_profile.py read their parts, so the whole set costs three
launches (ddp x2, ddp x3, fsdp x2).
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from preloaded_python import PreloadedPython

SCRIPT = r"""
import json, os, sys, traceback, warnings
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from fabric_core import Fabric

strategy, devices = sys.argv[1], int(sys.argv[2])
fabric = Fabric(accelerator="cpu", strategy=strategy, devices=devices)
fabric.launch()
rank, world = fabric.global_rank, fabric.world_size
out = {"rank": rank, "world": world}

def leg(name, fn):
    try:
        out[name] = fn()
    except Exception:
        out[name] = {"error": traceback.format_exc()}

def full_weights(model):
    state = model.state_dict()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach() for k, v in state.items()}

# ---- accumulation: N micro-batches of B per rank == one batch of N*B per rank (all ranks: N*B*world)
B, N, BATCHES, EPOCHS = 2, 3, 7, 2
def accumulation():
    torch.manual_seed(0)
    x = torch.randn(world * B * BATCHES, 4)
    y = torch.randn(world * B * BATCHES, 2)
    def make():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    module = make()
    model = fabric.setup_module(module) if strategy == "fsdp" else None
    if strategy == "fsdp":
        optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    else:
        model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    reduces = []
    if strategy == "ddp":
        def count(state, bucket):
            reduces.append(1)
            tensor = bucket.buffer().div_(world)
            return dist.all_reduce(tensor, async_op=True).get_future().then(lambda f: f.value()[0])
        model._forward_module.register_comm_hook(None, count)
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=B))
    boundaries = []
    for _ in range(EPOCHS):
        for bx, by in loader:
            with fabric.accumulate(model, steps=N, dataloader=loader) as step:
                fabric.backward(nn.functional.mse_loss(model(bx), by))
                optimizer.step()
                optimizer.zero_grad()
            boundaries.append([step.index, step.window, step.boundary])
    got = full_weights(model)
    # the reference: one process, one step per window on every rank's samples of that window
    from torch.utils.data import DistributedSampler
    shards = [list(DistributedSampler(range(len(x)), num_replicas=world, rank=r, shuffle=False)) for r in range(world)]
    ref = make()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(EPOCHS):
        for start in range(0, BATCHES, N):
            stop = min(start + N, BATCHES)
            idx = [i for shard in shards for i in shard[start * B : stop * B]]
            ref_opt.zero_grad()
            nn.functional.mse_loss(ref(x[idx]), y[idx]).backward()
            ref_opt.step()
    expected = ref.state_dict()
    diff = max((got[k] - expected[k]).abs().max().item() for k in expected)
    moved = max((got[k] - make().state_dict()[k]).abs().max().item() for k in expected)
    return {"max_diff": diff, "moved": moved, "reduces": len(reduces), "boundaries": boundaries}
leg("accumulate", accumulation)

# ---- gather_for_metrics: lengths that do not divide the world size
class Reversed(Sampler):
    def __init__(self, n):
        self.n = n
    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))
    def __len__(self):
        return self.n

def gathering():
    result = {}
    for length in (2 * world + 1, 5 * world - 1):
        ids = torch.arange(length)
        labels = ids % 3
        for name, kwargs in (("sequential", {}), ("custom_sampler", {"sampler": Reversed(length)})):
            loader = fabric.setup_dataloaders(DataLoader(TensorDataset(ids, labels), batch_size=2, **kwargs))
            seen, correct = [], 0
            for batch_ids, batch_labels in loader:
                preds = (batch_ids * 2) % 3  # a fixed "model": right on every third sample only
                g = fabric.gather_for_metrics({"ids": batch_ids, "pair": (preds, batch_labels)}, dataloader=loader)
                seen += g["ids"].tolist()
                correct += int((g["pair"][0] == g["pair"][1]).sum())
            exact = int((((ids * 2) % 3) == labels).sum())
            result[f"{name}_{length}"] = {"seen": seen, "correct": correct, "exact": exact}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result["uneven"] = fabric.gather_for_metrics(torch.arange(rank + 1)).tolist()
        fabric.gather_for_metrics(torch.arange(2))
    result["warnings"] = [str(w.message) for w in caught if "dataloader=" in str(w.message)]
    result["scalar"] = fabric.gather_for_metrics(torch.tensor(float(rank))).tolist()
    result["number"] = fabric.gather_for_metrics(rank * 10).tolist()
    return result
if strategy == "ddp":
    leg("gather", gathering)

# ---- split_between_processes
def splitting():
    items = list(range(7))
    with fabric.split_between_processes(items) as mine:
        plain = mine
    with fabric.split_between_processes(items, apply_padding=True) as mine:
        padded = mine
    with fabric.split_between_processes({"a": items, "t": torch.arange(7) * 2}) as mine:
        as_dict = {"a": mine["a"], "t": mine["t"].tolist()}
    gathered = fabric.all_gather(torch.tensor(padded)).flatten().tolist()
    return {"plain": plain, "padded": padded, "dict": as_dict, "gathered": gathered}
if strategy == "ddp":
    leg("split", splitting)

# ---- progress: only rank 0 draws
def progressing():
    data = [1, 2, 3]
    shown = fabric.progress(data, desc="p")
    return {"same_object": shown is data, "items": list(shown)}
leg("progress", progressing)

# ---- profile: one trace per rank, named by rank, in a shared folder
def profiling():
    folder = os.path.join(os.getcwd(), "traces")
    with fabric.profile(output_dir=folder):
        torch.ones(4, 4).matmul(torch.ones(4, 4))
    fabric.barrier()
    mine = [name for name in os.listdir(folder) if name.startswith(f"rank{rank}.")]
    for name in mine:
        json.load(open(os.path.join(folder, name)))
    return mine
if strategy == "ddp" and devices == 2:
    leg("profile", profiling)

fabric.barrier()
sys.stdout.write("RESULT " + json.dumps(out) + "\n")
sys.stdout.flush()
"""


@functools.cache
def job(strategy: str, devices: int, preloaded: PreloadedPython) -> dict[int, dict[str, Any]]:
    """Each rank's results of ``SCRIPT`` run with ``strategy`` on ``devices`` CPU processes (cached)."""
    from conftest import run_script

    folder = Path(tempfile.mkdtemp(prefix=f"conveniences-{strategy}{devices}-"))
    proc = run_script(folder, SCRIPT, strategy, str(devices), timeout=600, preloaded=preloaded)
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or len(rows) != devices:
        raise AssertionError(
            f"the {strategy} x{devices} job failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return {row["rank"]: row for row in rows}


def part(results: dict[int, dict[str, Any]], rank: int, name: str) -> Any:
    """One leg's result on ``rank``; a leg that raised fails the test with its traceback."""
    value = results[rank][name]
    if isinstance(value, dict) and "error" in value:
        import pytest

        pytest.fail(f"rank {rank}, leg {name!r} failed:\n{value['error']}", pytrace=False)
    return value
