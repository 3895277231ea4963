"""Checksums of checkpoints: every flipped, truncated or swapped byte is detected before anything is loaded.

Single files carry an XXH3-128 checksum in their zip comment; folders (sharded FSDP) carry a
manifest written last. Over a thousand mutations each, none may load silently.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from fabric_core import Fabric
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.folder import open_folder
from fabric_core.checkpoint.manifest import MANIFEST, verify_files
from fabric_core.checkpoint.torch_io import TorchCheckpointIO

STATE = {"w": torch.arange(4096.0).reshape(64, 64), "b": torch.linspace(-1, 1, 64), "step": 3}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_single_file_is_still_a_plain_torch_zip_with_its_checksum_in_the_comment(tmp_path):
    path = tmp_path / "ck.pt"
    TorchCheckpointIO().save_checkpoint(STATE, path)
    assert zipfile.ZipFile(path).comment.startswith(b"fabric-checksum:xxh3_128:")
    assert torch.equal(torch.load(path, weights_only=True)["w"], STATE["w"])  # plain torch.load still reads it


def test_local_and_streamed_writes_carry_the_same_checksum(tmp_path):
    """Locally torch.save writes to a path and the file is sealed afterwards; a URL streams through the hasher."""
    import io

    import fsspec
    from fabric_core.checkpoint.integrity import hash_file, read_trailer

    checkpoint_io = TorchCheckpointIO()
    local, url = tmp_path / "ck.pt", f"memory://integrity-{tmp_path.name}/ck.pt"
    assert checkpoint_io.write_file(STATE, local) == hash_file(None, str(local))  # what a manifest records
    checkpoint_io.write_file(STATE, url)
    with fsspec.open(url, "rb") as f:
        streamed = f.read()
    for data in (local.read_bytes(), streamed):
        assert read_trailer(io.BytesIO(data), len(data)) is not None
    assert _same(checkpoint_io.load_checkpoint(local), STATE) and _same(checkpoint_io.load_checkpoint(url), STATE)


def test_write_behind_flushes_while_the_file_is_written(tmp_path, monkeypatch):
    import os
    import time

    from fabric_core.checkpoint import write_behind as module

    flushed_at: list[int] = []
    real = getattr(os, "fdatasync", os.fsync)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (flushed_at.append(os.fstat(fd).st_size), real(fd))[1])
    with open(tmp_path / "f", "wb") as f:
        with module.write_behind(f.fileno(), step=1 << 16, period=0.005):
            for _ in range(4):
                f.write(b"x" * (1 << 16))
                f.flush()
                deadline = time.monotonic() + 5
                while len(flushed_at) < _ + 1 and time.monotonic() < deadline:
                    time.sleep(0.005)
        written = f.tell()
    assert len(flushed_at) == 4 and flushed_at == sorted(flushed_at) and flushed_at[-1] == written


def test_a_thousand_single_file_mutations_never_load_silently(tmp_path):
    path = tmp_path / "ck.pt"
    TorchCheckpointIO().save_checkpoint(STATE, path)
    original = path.read_bytes()
    rng = random.Random(0)
    silent, detected = 0, 0
    for i in range(1000):
        damaged = bytearray(original)
        kind = i % 3
        if kind == 0:  # flip one bit anywhere
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            damaged = damaged[: rng.randrange(len(damaged))]
        else:  # swap two equal-length ranges (different content)
            n = rng.randrange(1, 256)
            a, b = rng.randrange(len(damaged) - n), rng.randrange(len(damaged) - n)
            damaged[a : a + n], damaged[b : b + n] = original[b : b + n], original[a : a + n]
            if damaged == original:
                continue
        path.write_bytes(bytes(damaged))
        try:
            TorchCheckpointIO().load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            detected += 1
            continue
        silent += 1
    assert silent == 0 and detected >= 990


def test_verify_false_skips_the_check(tmp_path):
    path = tmp_path / "ck.pt"
    TorchCheckpointIO().save_checkpoint(STATE, path)
    data = bytearray(path.read_bytes())
    start = data.find(b"data/0") + 200  # inside the first tensor's bytes (after its local header)
    data[start] ^= 0x10
    path.write_bytes(bytes(data))
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(CheckpointError, match="checksum does not match"):
        fabric.load(path)
    loaded = fabric.load(path, verify=False)
    assert not _same(loaded, STATE)  # the damage is real; verify=False let it through on request


def test_a_lost_checksum_trailer_is_noticed(tmp_path):
    path = tmp_path / "ck.pt"
    TorchCheckpointIO().save_checkpoint(STATE, path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # inside the prefix of the trailer: it no longer looks like a checksum
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="missing or damaged"):
        TorchCheckpointIO().load_checkpoint(path)


def test_async_save_returns_a_future_and_writes_the_state_as_it_was(tmp_path):
    fabric = Fabric(accelerator="cpu")
    model = fabric.setup_module(torch.nn.Linear(256, 256))
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    handle = fabric.save(tmp_path / "ck.pt", {"model": model, "step": 1}, async_=True)
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on; the checkpoint keeps the snapshot
    assert handle.result(timeout=120) is None
    loaded = fabric.load(tmp_path / "ck.pt")
    assert loaded["step"] == 1 and _same(loaded["model"], expected)
    assert fabric.save(tmp_path / "ck.pt", {"step": 2}) is None  # a plain save returns nothing, as before
    assert fabric.load(tmp_path / "ck.pt")["step"] == 2


SAVE_SHARDED = r"""
import json, sys
import torch
from torch import nn
from fabric_core import Fabric
from fabric_core.strategies.fsdp import FSDPStrategy

def main(fabric, task, folder):
    torch.manual_seed(0)
    model = fabric.setup_module(nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16)))
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters()))
    if task == "save":
        fabric.backward(model(torch.randn(4, 16)).sum())
        optimizer.step()
        fabric.save(folder, {"model": model, "optimizer": optimizer, "step": 5})
        return {"ok": True}
    try:
        fabric.load(folder, {"model": model, "optimizer": optimizer})
    except Exception as err:
        return {"error": type(err).__name__, "message": str(err)}
    return {"error": None}

if __name__ == "__main__":
    task, folder = sys.argv[1], sys.argv[2]
    fabric = Fabric(accelerator="cpu", strategy=FSDPStrategy(start_method="spawn"), devices=2)
    print("RESULT", json.dumps(fabric.launch(main, task, folder)))
"""


def _result(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.fixture
def sharded_folder(preloaded_script_runner, tmp_path) -> Path:
    folder = tmp_path / "ck"
    _result(preloaded_script_runner(SAVE_SHARDED, "save", str(folder), timeout=500))
    return folder


def _verify_all(folder: Path) -> list[str]:
    found = open_folder(folder, foreign_marker=".metadata")
    return [p for rank in range(2) for p in verify_files(found.fs, found.folder, found.manifest, rank, 2)]


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_a_thousand_folder_mutations_are_all_detected_and_a_load_names_file_and_shard(
    sharded_folder, preloaded_script_runner
):
    files = sorted(p for p in sharded_folder.iterdir() if p.is_file())
    assert {p.name for p in files} == {".metadata", "__0_0.distcp", "__1_0.distcp", "fabric_state.pt", MANIFEST}
    original = {p: p.read_bytes() for p in files}
    shards = [p for p in files if p.suffix == ".distcp"]
    rng = random.Random(1)
    silent, detected = 0, 0
    for i in range(1200):
        kind = i % 3
        if kind == 0:  # flip a bit in any file, the manifest included
            target = rng.choice(files)
            data = bytearray(original[target])
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            target.write_bytes(bytes(data))
        elif kind == 1:  # truncate any file
            target = rng.choice(files)
            target.write_bytes(original[target][: rng.randrange(len(original[target]))])
        else:  # swap the two ranks' shards, or put one shard in place of the other
            a, b = shards
            if rng.random() < 0.5:
                a.write_bytes(original[b])
                b.write_bytes(original[a])
            else:
                a.write_bytes(original[b])
        try:
            problems = _verify_all(sharded_folder)
        except CheckpointError:
            problems = ["manifest refused"]
        if problems:
            detected += 1
        elif any(p.read_bytes() != original[p] for p in files):
            silent += 1
        for p, data in original.items():
            p.write_bytes(data)
    assert silent == 0 and detected == 1200
    # the real load (2 processes) refuses a damaged shard and names the file and the rank that wrote it
    damaged = bytearray(original[shards[1]])
    damaged[len(damaged) // 2] ^= 0x04
    shards[1].write_bytes(bytes(damaged))
    result = _result(preloaded_script_runner(SAVE_SHARDED, "load", str(sharded_folder), timeout=500))
    assert result["error"] == "CheckpointError"
    assert "__1_0.distcp" in result["message"] and "rank 1" in result["message"]


def test_a_folder_without_its_manifest_is_not_a_checkpoint(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="manifest"):
        open_folder(folder, foreign_marker=".metadata")
    shutil.rmtree(folder)
