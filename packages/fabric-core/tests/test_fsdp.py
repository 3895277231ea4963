"""FSDP2 on CPU with 2 gloo processes: training, no_backward_sync, meta init, checkpoints, resharding."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]  # several multi-process jobs per test

FSDP = r"""
import json, sys
import torch
from torch import nn
from fabric_core import Fabric
from fabric_core.strategies.fsdp import FSDPStrategy

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), Block(), Block(), nn.Linear(8, 1))

def set_up(fabric):
    model = make_model()
    return fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=0.05))

def losses(fabric, model, optimizer, steps=6):
    out = []
    for i in range(steps):
        g = torch.Generator().manual_seed(1000 * i + fabric.global_rank)
        x = torch.randn(4, 6, generator=g)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()
        out.append(fabric.all_reduce(loss.detach()).item())
    return out

def main(fabric, task, folder):
    result = {"rank": fabric.global_rank}
    if task == "curves":
        model, optimizer = set_up(fabric)
        result["losses"] = losses(fabric, model, optimizer)
        if hasattr(model.module[0].weight, "full_tensor"):
            result["sharded_rows"] = model.module[0].weight.to_local().shape[0]
        # no_backward_sync leaves each rank's gradient local
        x = torch.full((2, 6), float(fabric.global_rank + 1))
        optimizer.zero_grad()
        with fabric.no_backward_sync(model):
            fabric.backward(model(x).sum())
        g = model.module[0].weight.grad
        # DDP keeps the local gradient in .grad; FSDP2 holds it internally until the next synchronised backward
        result["unsynced"] = None if g is None else (g.to_local() if hasattr(g, "to_local") else g).abs().sum().item()
        # the next synchronised backward reduces the accumulated local gradients of all ranks
        fabric.backward(model(x).sum())
        g = model.module[0].weight.grad
        result["synced"] = g.full_tensor().abs().sum().item() if hasattr(g, "full_tensor") else g.abs().sum().item()
        result["clip_norm"] = float(fabric.clip_gradients(model, optimizer, max_norm=0.01))
        g = model.module[0].weight.grad
        result["clipped"] = g.full_tensor().abs().sum().item() if hasattr(g, "full_tensor") else g.abs().sum().item()
    elif task == "save":
        with fabric.init_module(empty_init=True):
            model = make_model()
        result["meta_before_setup"] = model[0].weight.is_meta
        model = fabric.setup_module(model)
        result["meta_after_setup"] = model.module[0].weight.is_meta
        optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=0.05))
        losses(fabric, model, optimizer, steps=2)
        fabric.save(folder, {"model": model, "optimizer": optimizer, "step": 2, "note": "hello"})
        result["probe"] = model(torch.ones(1, 6)).item()
        result["continued"] = losses(fabric, model, optimizer, steps=3)
    elif task == "save_async":
        model, optimizer = set_up(fabric)
        losses(fabric, model, optimizer, steps=2)
        result["probe"] = model(torch.ones(1, 6)).item()
        handle = fabric.save(folder, {"model": model, "optimizer": optimizer, "step": 2}, async_=True)
        result["handle"] = type(handle).__name__
        # training and its collectives go on while the shards are written
        result["continued"] = losses(fabric, model, optimizer, steps=3)
        result["changed_probe"] = model(torch.ones(1, 6)).item()
        handle.result()
        result["files"] = sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
        fresh, fresh_optimizer = set_up(fabric)
        state = {"model": fresh, "optimizer": fresh_optimizer, "step": 0}
        fabric.load(folder, state)
        result["step"] = state["step"]
        result["loaded_probe"] = fresh(torch.ones(1, 6)).item()
        result["loaded_continued"] = losses(fabric, fresh, fresh_optimizer, steps=3)
    elif task == "save_async_and_exit":
        model, optimizer = set_up(fabric)
        losses(fabric, model, optimizer, steps=2)
        result["probe"] = model(torch.ones(1, 6)).item()
        fabric.save(folder, {"model": model, "optimizer": optimizer, "step": 2}, async_=True)  # never waited for
    elif task == "save_fails_on_one_rank":
        model, optimizer = set_up(fabric)
        fabric.save(folder, {"model": model, "optimizer": optimizer, "step": 1})
        result["probe"] = model(torch.ones(1, 6)).item()
        losses(fabric, model, optimizer, steps=1)
        unpicklable = {"model": model, "optimizer": optimizer, "step": 2, "hook": lambda: 0}  # rank 0 writes it
        for mode in ("sync", "async"):
            try:
                handle = fabric.save(folder, unpicklable, async_=mode == "async")
                if handle is not None:
                    handle.result()
                raised, message = 0.0, ""
            except Exception as err:
                raised, message = 1.0, f"{type(err).__name__}: {err}"
            result[mode + "_raised_on"] = fabric.all_reduce(torch.tensor(raised), reduce_op="sum").item()
            result[mode + "_message"] = message
        fresh, fresh_optimizer = set_up(fabric)
        state = {"model": fresh, "optimizer": fresh_optimizer, "step": 0}
        fabric.load(folder, state)
        result["step"] = state["step"]
        result["loaded_probe"] = fresh(torch.ones(1, 6)).item()
    elif task == "load":
        model, optimizer = set_up(fabric)
        state = {"model": model, "optimizer": optimizer, "step": 0}
        result["remainder"] = fabric.load(folder, state)
        result["step"] = state["step"]
        result["probe"] = model(torch.ones(1, 6)).item()
        result["continued"] = losses(fabric, model, optimizer, steps=3)
    return result

if __name__ == "__main__":
    strategy, task, folder, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if strategy == "fsdp":
        strategy = FSDPStrategy(auto_wrap_policy={Block}, start_method="spawn")
    elif strategy == "fsdp_full":
        strategy = FSDPStrategy(auto_wrap_policy={Block}, start_method="spawn", state_dict_type="full")
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=devices)
    print("RESULT", json.dumps(fabric.launch(main, task, folder)))
"""


def _job(
    run: Callable[..., subprocess.CompletedProcess[str]], strategy: str, task: str, folder: Path, devices: int = 2
):
    """Rank 0's result of ``FSDP`` doing ``task`` with ``strategy`` on ``devices`` processes; ``run`` runs the script."""
    proc = run(FSDP, strategy, task, str(folder), str(devices), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT ")).split(" ", 1)[1])


def test_fsdp_trains_like_ddp_and_shards_parameters(preloaded_script_runner, tmp_path):
    fsdp = _job(preloaded_script_runner, "fsdp", "curves", tmp_path / "x")
    ddp = _job(preloaded_script_runner, "ddp_spawn", "curves", tmp_path / "x")
    assert fsdp["losses"][-1] < fsdp["losses"][0]
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5, abs=1e-6)  # same seed, same data
    assert fsdp["sharded_rows"] == 4  # 8 rows split over 2 ranks
    # accumulated without sync, then one synchronised backward: FSDP and DDP agree on the reduced gradient
    assert fsdp["synced"] == pytest.approx(ddp["synced"], rel=1e-5)
    # clip_gradients sees the norm of the whole (sharded) model and clips it the same way
    assert fsdp["clip_norm"] == pytest.approx(ddp["clip_norm"], rel=1e-5) and fsdp["clip_norm"] > 0.01
    assert fsdp["clipped"] == pytest.approx(ddp["clipped"], rel=1e-4) and fsdp["clipped"] < fsdp["synced"]
    assert ddp["unsynced"] != pytest.approx(ddp["synced"] / 2, rel=1e-3)  # rank 0 had only its own gradient


@pytest.fixture(scope="module")
def sharded_save(tmp_path_factory, preloaded_python):
    """One 2-process job that saves a sharded checkpoint, shared by the tests that load it (a job is slow)."""
    from conftest import run_script

    root = tmp_path_factory.mktemp("sharded")
    folder = root / "ckpt"
    return root, folder, _job(functools.partial(run_script, root, preloaded=preloaded_python), "fsdp", "save", folder)


def test_sharded_checkpoint_reloads_on_another_process_count_and_consolidates(
    preloaded_script_runner, tmp_path, sharded_save
):
    root, folder, saved = sharded_save
    assert saved["meta_before_setup"] is True and saved["meta_after_setup"] is False
    assert (
        (folder / ".metadata").is_file() and (folder / "__0_0.distcp").is_file() and (folder / "__1_0.distcp").is_file()
    )
    assert not [p for p in root.iterdir() if p.name.startswith(".fabric-")]
    # the same 2-process job continues exactly as the uninterrupted one did
    resumed = _job(preloaded_script_runner, "fsdp", "load", folder)
    assert resumed["step"] == 2 and resumed["remainder"] == {"note": "hello"}
    assert resumed["continued"] == pytest.approx(saved["continued"], rel=1e-6)
    # a single process (no FSDP) reads the consolidated file
    out = subprocess.run(
        [sys.executable, "-m", "fabric_core.cli", "consolidate", str(folder), "-o", str(tmp_path / "one.pt")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    full = torch.load(tmp_path / "one.pt", weights_only=True)
    assert set(full["model"]) == {
        "0.weight",
        "0.bias",
        "1.a.weight",
        "1.a.bias",
        "1.b.weight",
        "1.b.bias",
        "2.a.weight",
        "2.a.bias",
        "2.b.weight",
        "2.b.bias",
        "3.weight",
        "3.bias",
    }
    assert full["model"]["0.weight"].shape == (8, 6) and full["step"] == 2


def test_sharded_checkpoint_loads_on_one_process(preloaded_script_runner, sharded_save):
    _, folder, saved = sharded_save
    single = _job(preloaded_script_runner, "fsdp", "load", folder, devices=1)
    assert single["step"] == 2
    assert single["probe"] == pytest.approx(saved["probe"], rel=1e-6)  # the same weights, now unsharded


def test_async_sharded_save_returns_a_future_and_writes_the_state_of_the_call(preloaded_script_runner, tmp_path):
    folder = tmp_path / "async-ckpt"
    result = _job(preloaded_script_runner, "fsdp", "save_async", folder)
    assert result["handle"] == "Future"
    assert result["changed_probe"] != pytest.approx(result["probe"], rel=1e-6)  # training changed the model
    # what was saved is the state at the call, not what training made of it while the shards were written
    assert result["step"] == 2 and result["loaded_probe"] == pytest.approx(result["probe"], rel=1e-6)
    assert result["loaded_continued"] == pytest.approx(result["continued"], rel=1e-5)  # optimizer state too
    assert {"fabric-manifest.json", ".metadata", "__0_0.distcp", "__1_0.distcp"} <= set(result["files"])
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".fabric-")]  # staging swapped in


def test_a_job_that_ends_during_an_async_sharded_save_finishes_it_first(preloaded_script_runner, tmp_path):
    folder = tmp_path / "exit-ckpt"
    saved = _job(preloaded_script_runner, "fsdp", "save_async_and_exit", folder)
    loaded = _job(preloaded_script_runner, "fsdp", "load", folder)
    assert loaded["step"] == 2 and loaded["probe"] == pytest.approx(saved["probe"], rel=1e-6)


def test_a_sharded_save_that_fails_on_one_rank_raises_on_every_rank_and_keeps_the_last_checkpoint(
    preloaded_script_runner, tmp_path
):
    result = _job(preloaded_script_runner, "fsdp", "save_fails_on_one_rank", tmp_path / "ck")
    for mode in ("sync", "async"):
        assert result[mode + "_raised_on"] == 2, result  # no rank is left waiting for the other
        assert result[mode + "_message"].startswith("CheckpointError") and "rank 0" in result[mode + "_message"]
        assert "previous one at that path is kept" in result[mode + "_message"]
    assert result["step"] == 1 and result["loaded_probe"] == pytest.approx(result["probe"], rel=1e-6)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".fabric-")]


def test_full_state_dict_checkpoint_is_one_file(preloaded_script_runner, tmp_path):
    path = tmp_path / "full.pt"
    _job(preloaded_script_runner, "fsdp_full", "save", path)
    assert path.is_file()
    data = torch.load(path, weights_only=True)
    assert data["model"]["0.weight"].shape == (8, 6)
    resumed = _job(preloaded_script_runner, "fsdp_full", "load", path)
    assert resumed["step"] == 2
