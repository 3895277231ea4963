"""Checkpoints: round trips, remainder, filters, raw loads, atomic writes, damaged files, fsspec URLs."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from fabric_core import Fabric
from fabric_core.checkpoint.atomic import TMP_MARKER
from fabric_core.checkpoint.errors import CheckpointError
from torch import nn


def _setup(fabric: Fabric, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    fmodel, fopt = fabric.setup(model, optimizer)
    fabric.backward(fmodel(torch.randn(4, 3)).sum())
    fopt.step()
    return fmodel, fopt


def test_round_trip_restores_modules_optimizers_and_plain_values(tmp_path):
    fabric = Fabric(accelerator="cpu")
    model, optimizer = _setup(fabric, seed=0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    optimizer.step()  # the order torch expects: a scheduler step before any optimizer step warns
    scheduler.step()
    path = tmp_path / "ckpt.pt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "scheduler": scheduler, "step": 7, "extra": {"a": 1}})

    other_model, other_opt = _setup(Fabric(accelerator="cpu"), seed=1)
    other_sched = torch.optim.lr_scheduler.StepLR(other_opt, step_size=1)
    state = {"model": other_model, "optimizer": other_opt, "scheduler": other_sched, "step": 0}
    remainder = fabric.load(path, state)
    assert remainder == {"extra": {"a": 1}}
    assert state["step"] == 7
    assert torch.equal(other_model.module.weight, model.module.weight)
    assert other_opt.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    assert other_sched.last_epoch == scheduler.last_epoch


def test_reference_page_argument_order_is_accepted(tmp_path):
    fabric = Fabric(accelerator="cpu")
    fabric.save({"step": 1}, tmp_path / "c.pt")
    assert fabric.load(tmp_path / "c.pt") == {"step": 1}


def test_strict_load_names_missing_keys_and_non_strict_skips_them(tmp_path):
    fabric = Fabric(accelerator="cpu")
    fabric.save(tmp_path / "c.pt", {"step": 1})
    with pytest.raises(CheckpointError, match=r"no entries \['epoch'\]"):
        fabric.load(tmp_path / "c.pt", {"step": 0, "epoch": 0})
    state = {"step": 0, "epoch": 5}
    fabric.load(tmp_path / "c.pt", state, strict=False)
    assert state == {"step": 1, "epoch": 5}


def test_filter_keeps_selected_entries(tmp_path):
    fabric = Fabric(accelerator="cpu")
    model, _ = _setup(fabric)
    fabric.save(tmp_path / "c.pt", {"model": model}, filter={"model": lambda name, value: name.endswith("weight")})
    assert list(fabric.load(tmp_path / "c.pt")["model"]) == ["weight"]
    with pytest.raises(ValueError, match="not present in the state keys"):  # Lightning's error
        fabric.save(tmp_path / "d.pt", {"model": model}, filter={"other": lambda k, v: True})


def test_load_raw_into_module_and_optimizer(tmp_path):
    fabric = Fabric(accelerator="cpu")
    model, optimizer = _setup(fabric)
    torch.save(model.module.state_dict(), tmp_path / "weights.pt")
    torch.save(optimizer.optimizer.state_dict(), tmp_path / "opt.pt")
    other_model, other_opt = _setup(Fabric(accelerator="cpu"), seed=3)
    fabric.load_raw(tmp_path / "weights.pt", other_model)
    fabric.load_raw(tmp_path / "opt.pt", other_opt)
    assert torch.equal(other_model.module.weight, model.module.weight)
    with pytest.raises(TypeError, match="module or an optimizer"):
        fabric.load_raw(tmp_path / "weights.pt", {"x": 1})


def test_successful_save_leaves_no_temporary_files_and_replaces_atomically(tmp_path):
    fabric = Fabric(accelerator="cpu")
    for step in range(3):
        fabric.save(tmp_path / "c.pt", {"step": step})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert fabric.load(tmp_path / "c.pt") == {"step": 2}


def test_failure_during_save_keeps_the_previous_checkpoint(tmp_path):
    fabric = Fabric(accelerator="cpu")
    fabric.save(tmp_path / "c.pt", {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom while writing")

    with pytest.raises(RuntimeError, match="boom"):
        fabric.save(tmp_path / "c.pt", {"step": 2, "bad": Unpicklable()})
    assert fabric.load(tmp_path / "c.pt") == {"step": 1}
    assert not [p for p in tmp_path.iterdir() if TMP_MARKER in p.name]


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "truncated, empty"), (b"not a checkpoint at all", "could not be read|damaged"), (None, "truncated, empty")],
)
def test_damaged_files_give_an_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is None:  # a real checkpoint cut in half
        torch.save({"w": torch.randn(1000)}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        Fabric(accelerator="cpu").load(path)
    assert str(path) in str(info.value)


def test_missing_file_and_non_dict_checkpoint(tmp_path):
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        fabric.load(tmp_path / "nope.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="dict of state"):
        fabric.load(tmp_path / "list.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_does_not_execute_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": _Payload()}, f, protocol=2)  # torch.save's protocol (torch warns on others)
    torch.save({"x": _Payload()}, tmp_path / "evil2.pt")
    fabric = Fabric(accelerator="cpu")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError):
            fabric.load(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_from_a_newer_format_is_refused(tmp_path):
    torch.save({"__fabric_format__": 99, "step": 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 99.*newer"):
        Fabric(accelerator="cpu").load(tmp_path / "future.pt")


def test_plain_torch_save_files_load(tmp_path):
    torch.save({"step": 3}, tmp_path / "plain.pt")
    assert Fabric(accelerator="cpu").load(tmp_path / "plain.pt") == {"step": 3}


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_urls(tmp_path, scheme):
    fabric = Fabric(accelerator="cpu")
    model, _ = _setup(fabric)
    url = "memory://bucket/run/ckpt.pt" if scheme == "memory" else f"file://{tmp_path}/sub/ckpt.pt"
    fabric.save(url, {"model": model, "step": 4})
    state = {"model": _setup(Fabric(accelerator="cpu"), seed=9)[0], "step": 0}
    fabric.load(url, state)
    assert state["step"] == 4
    assert torch.equal(state["model"].module.weight, model.module.weight)


def test_temporaries_of_killed_writers_are_removed_by_the_next_save(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{TMP_MARKER}c.pt.{dead_pid}.deadbeef"
    live = tmp_path / f"{TMP_MARKER}c.pt.{os.getpid()}.cafebabe"  # a writer still running: kept
    stale_folder = tmp_path / f"{TMP_MARKER}c.pt.{dead_pid}.feedf00d"  # today's writers stage in a folder
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    stale_folder.mkdir()
    (stale_folder / "c.pt").write_bytes(b"partial")
    Fabric(accelerator="cpu").save(tmp_path / "c.pt", {"step": 1})
    assert not stale.exists() and not stale_folder.exists() and live.exists()


def test_the_same_state_saved_twice_is_the_same_bytes(tmp_path):
    """No temporary name leaks into the file (torch names its zip archive after the file it writes)."""
    fabric = Fabric(accelerator="cpu")
    model, optimizer = _setup(fabric)
    fabric.save(tmp_path / "a.pt", {"model": model, "optimizer": optimizer, "step": 1})
    fabric.save(tmp_path / "b" / "a.pt", {"model": model, "optimizer": optimizer, "step": 1})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "a.pt").read_bytes()
