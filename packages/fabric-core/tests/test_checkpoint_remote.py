"""Checkpoints on fsspec URLs against a real S3-compatible server (moto in server mode + s3fs) on loopback.

Every format round-trips; a path whose scheme no installed filesystem handles is refused before
anything is written; SIGKILLs during uploads (plain and async saves, single files and sharded
folders) leave the last good checkpoint loadable and never promote half a checkpoint.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fabric_core import Fabric
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.folder import open_folder
from fabric_core.checkpoint.manifest import MANIFEST, verify_files
from fabric_core.checkpoint.torch_io import TorchCheckpointIO
from preloaded_python import PreloadedPython
from s3_server import DUMMY_CREDENTIALS, make_bucket, moto_server

from conftest import script_env

BUCKET = "fabric-checkpoints"


@pytest.fixture(scope="module")
def s3() -> Any:
    with moto_server() as options:
        make_bucket(options, BUCKET)
        yield options


def _fs(options: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(**options, skip_instance_cache=True)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def test_single_file_round_trips_through_s3(s3):
    fabric = Fabric(accelerator="cpu", devices=1)
    model = _model()
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters()))
    fabric.backward(model(torch.randn(4, 8)).sum())
    optimizer.step()
    url = f"s3://{BUCKET}/single/ck.pt"
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 7}, storage_options=s3)
    assert _fs(s3).ls(f"{BUCKET}/single") == [f"{BUCKET}/single/ck.pt"]  # no temporary objects left
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    other, other_opt = fabric.setup(other, torch.optim.AdamW(other.parameters()))
    state = {"model": other, "optimizer": other_opt, "step": 0}
    fabric.load(url, state, storage_options=s3)
    assert state["step"] == 7
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])


def test_damaged_object_on_s3_is_refused(s3):
    url = f"s3://{BUCKET}/damaged/ck.pt"
    TorchCheckpointIO().save_checkpoint({"w": torch.arange(10_000.0)}, url, storage_options=s3)
    fs = _fs(s3)
    data = bytearray(fs.cat_file(f"{BUCKET}/damaged/ck.pt"))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(f"{BUCKET}/damaged/ck.pt", bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match") as info:
        Fabric(accelerator="cpu").load(url, storage_options=s3)
    assert url in str(info.value)
    assert Fabric(accelerator="cpu").load(url, storage_options=s3, verify=False)["w"].shape == (10_000,)


def test_a_scheme_without_filesystem_is_refused_before_writing(tmp_path, monkeypatch):
    from fsspec.registry import known_implementations

    monkeypatch.chdir(tmp_path)
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(CheckpointError, match="no fsspec filesystem handles the 'nosuchfs' scheme"):
        fabric.save("nosuchfs://bucket/ck.pt", {"step": 1})
    missing = next(
        (
            scheme
            for scheme, spec in sorted(known_implementations.items())
            if scheme in ("gs", "abfs", "oci", "dropbox", "webdav") and not _importable(spec["class"].split(".", 1)[0])
        ),
        None,
    )
    assert missing is not None, "every candidate filesystem package is installed; pick another scheme"
    package = known_implementations[missing]["class"].split(".", 1)[0]
    with pytest.raises(CheckpointError, match=f"pip install {package}"):
        fabric.save(f"{missing}://bucket/ck.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []  # nothing was written, not even a local folder named after the scheme


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


SHARDED = r"""
import json, os, sys
import torch
from torch import nn
from fabric_core import Fabric
from fabric_core.strategies.fsdp import FSDPStrategy

def make_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))

def main(fabric, url, options):
    model = fabric.setup_module(make_model(0))
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=0.05))
    fabric.backward(model(torch.randn(4, 6)).pow(2).mean())
    optimizer.step()
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 1}, storage_options=options)
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 2, "note": "hi"}, storage_options=options)
    probe = model(torch.ones(1, 6)).item()
    other = fabric.setup_module(make_model(1))
    other_opt = fabric.setup_optimizers(torch.optim.AdamW(other.parameters(), lr=0.05))
    state = {"model": other, "optimizer": other_opt, "step": 0}
    remainder = fabric.load(url, state, storage_options=options)
    return {"probe": probe, "loaded_probe": other(torch.ones(1, 6)).item(), "step": state["step"], "rest": remainder}

if __name__ == "__main__":
    url, options, devices = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    fabric = Fabric(accelerator="cpu", strategy=FSDPStrategy(start_method="spawn"), devices=devices)
    print("RESULT", json.dumps(fabric.launch(main, url, options)))
"""


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_fsdp_sharded_checkpoint_round_trips_through_s3_on_two_processes(s3, preloaded_script_runner):
    url = f"s3://{BUCKET}/fsdp/ck"
    result = _result(preloaded_script_runner(SHARDED, url, json.dumps(s3), "2", timeout=500, env=DUMMY_CREDENTIALS))
    assert result["step"] == 2 and result["rest"] == {"note": "hi"}
    assert result["loaded_probe"] == pytest.approx(result["probe"], rel=1e-6)
    fs = _fs(s3)
    entries = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/fsdp/ck"))
    versions = [e for e in entries if e.startswith("v-")]
    assert entries == sorted([MANIFEST, *versions]) and len(versions) == 1, entries  # the first save was cleaned
    found = open_folder(url, s3)
    assert set(found.manifest.files) == {".metadata", "__0_0.distcp", "__1_0.distcp", "fabric_state.pt"}
    assert {r.rank for r in found.manifest.files.values()} == {0, 1}


@pytest.mark.multiprocess
@pytest.mark.timeout(600)
def test_fsdp_sharded_save_to_a_memory_url_writes_no_local_folder(preloaded_script_runner, tmp_path):
    result = _result(preloaded_script_runner(SHARDED, "memory://bucket/ck", "{}", "1", timeout=500))
    assert result["step"] == 2 and result["loaded_probe"] == pytest.approx(result["probe"], rel=1e-6)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "script.py"]
    assert leftovers == [], f"a URL became local files: {leftovers}"


WRITER = r"""
import json, sys
import torch
from fabric_core import Fabric
from fabric_core.strategies.fsdp import FSDPStrategy

def main(fabric, mode, url, options, start):
    torch.manual_seed(0)
    model = fabric.setup_module(torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024)))
    step = start
    while True:
        with torch.no_grad():
            for p in model.parameters():
                torch.nn.init.constant_(p, float(step))
        print(f"SAVING {step}", flush=True)
        if mode in ("async", "sharded_async"):
            handle = fabric.save(url, {"model": model, "step": step}, storage_options=options, async_=True)
            print(f"RETURNED {step}", flush=True)
            with torch.no_grad():  # training goes on while the snapshot is written
                for p in model.parameters():
                    p.add_(1000.0)
            handle.result()
        else:
            fabric.save(url, {"model": model, "step": step}, storage_options=options)
        print(f"SAVED {step}", flush=True)
        step += 1

if __name__ == "__main__":
    mode, url, options, start = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    strategy = FSDPStrategy(start_method="fork") if mode.startswith("sharded") else "auto"
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=1)
    fabric.launch(main, mode, url, options, start)
"""


def _start_writer(preloaded: PreloadedPython, args: list[str], env: dict[str, str], stderr: Any) -> Any:
    """``python writer.py ARGS`` leading a process group of its own (the kill reaches every process of the writer),
    its stdout a text pipe; a fork of the preloaded interpreter where it serves this environment."""
    command = [sys.executable, *args]
    return preloaded.start(command, cwd=Path(args[0]).parent, env=env, stderr=stderr.fileno(), start_new_session=True)


def _lines(stream: Any, out: queue.Queue, history: list[str]) -> None:
    for line in stream:
        history.append(line.strip())
        out.put((time.monotonic(), line.strip()))
    out.put((time.monotonic(), None))


def _next(lines: queue.Queue, prefix: str, timeout: float = 300) -> tuple[float, int]:
    deadline = time.monotonic() + timeout
    while True:
        stamp, line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"the writer exited before printing {prefix}")
        if line.startswith(prefix + " "):
            return stamp, int(line.split()[1])


def _load_latest(mode: str, url: str, options: dict[str, Any], scratch: Path) -> dict[str, Any]:
    if mode.startswith("sharded"):
        from fabric_core.checkpoint.consolidate import consolidate

        target = scratch / "consolidated.pt"
        consolidate(url, target, storage_options=options)
        return TorchCheckpointIO().load_checkpoint(target)
    return TorchCheckpointIO().load_checkpoint(url, storage_options=options)


@pytest.mark.multiprocess
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("mode", ["file", "async", "sharded", "sharded_async"])
def test_sigkill_during_upload_keeps_the_last_good_checkpoint(s3, tmp_path, preloaded_python, mode):
    """Writers are SIGKILLed in the middle of a save; each time the newest complete save loads.

    Each kill starts a fresh writer (a fork of the preloaded interpreter: s3fs and, for sharded modes, a forked
    worker and its process group; the kill reaches both): a few seconds each. The default run kills 6 per mode, 24
    over the four modes; ``FABRIC_UPLOAD_KILLS=20`` asks for 20 per mode (the figures on docs/pages/checkpoints.md
    were measured that way).
    """
    wanted = int(os.environ.get("FABRIC_UPLOAD_KILLS", "6"))
    url = f"s3://{BUCKET}/kill-{mode}/ck"
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    env = script_env(DUMMY_CREDENTIALS)
    rng = random.Random(17)
    fs = _fs(s3)
    mid_save_kills, step, attempts = 0, 0, 0
    while mid_save_kills < wanted:
        attempts += 1
        assert attempts <= 2 * wanted, f"only {mid_save_kills} of {attempts} kills landed inside a save"
        errors = tmp_path / f"writer-{attempts}.err"
        with errors.open("w") as stderr:
            proc = _start_writer(preloaded_python, [str(script), mode, url, json.dumps(s3), str(step)], env, stderr)
        lines: queue.Queue = queue.Queue()
        history: list[str] = []
        reader = threading.Thread(target=_lines, args=(proc.stdout, lines, history), daemon=True)
        reader.start()
        try:
            _next(lines, "SAVED")  # the first save (slow: connections are opened)
            started, _ = _next(lines, "SAVING")
            finished, _ = _next(lines, "SAVED")
            _next(lines, "RETURNED" if mode.endswith("async") else "SAVING")
            time.sleep(rng.uniform(0.0, finished - started))
        except AssertionError as err:
            raise AssertionError(f"{err}; its stderr:\n{errors.read_text()[-3000:]}") from None
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=60)
        printed = [line.split() for line in history if line]
        saved = [int(n) for word, n in printed if word == "SAVED"]
        begun = [int(n) for word, n in printed if word == "SAVING"]
        good = max(saved, default=step - 1)
        if max(begun) > good:
            mid_save_kills += 1
        loaded = _load_latest(mode, url, s3, tmp_path)
        # the newest complete save: the last one reported, or the one the kill hit just before it was reported
        assert loaded["step"] in (good, max(begun)), f"kill {attempts}: saved up to step {good}, found {loaded['step']}"
        good = loaded["step"]
        for name, tensor in loaded["model"].items():
            assert torch.all(tensor == float(good)), f"kill {attempts}: {name} is not the state of step {good}"
        if mode.startswith("sharded"):
            found = open_folder(url, s3)
            assert verify_files(found.fs, found.folder, found.manifest) == []  # the promoted folder is complete
        else:
            assert fs.ls(f"{BUCKET}/kill-{mode}") == [f"{BUCKET}/kill-{mode}/ck"]  # nothing half-written is visible
        step = good + 1
    if mode.startswith("sharded"):  # the next successful save removes what the killed ones left
        with open(os.devnull, "w") as stderr:
            proc = _start_writer(preloaded_python, [str(script), mode, url, json.dumps(s3), str(step)], env, stderr)
        lines = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines, []), daemon=True).start()
        try:
            _next(lines, "SAVED")
            _next(lines, "SAVING")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        fs.invalidate_cache()
        entries = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/kill-{mode}/ck")]
        assert MANIFEST in entries
        assert len([e for e in entries if e.startswith("v-")]) <= 2  # the current one (+ the killed save's)
