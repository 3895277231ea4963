"""DeepSpeed checkpoint folders on an fsspec URL (a real S3 server on loopback) and their checksum manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fabric-core" / "tests"))
from s3_server import DUMMY_CREDENTIALS, make_bucket, moto_server

pytestmark = pytest.mark.multiprocess

JOB = textwrap.dedent(
    r"""
    import json, sys
    import torch
    from torch import nn
    from fabric_core import Fabric
    from fabric_deepspeed import DeepSpeedStrategy

    fabric = Fabric(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=2))
    fabric.launch()

    def fresh(seed):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
        model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=0.01))
        return fabric, model, optimizer

    def step(fabric, model, optimizer):
        g = torch.Generator().manual_seed(fabric.global_rank)
        loss = model(torch.randn(4, 6, generator=g)).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    url, local, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    fabric, model, optimizer = fresh(0)
    step(fabric, model, optimizer)
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 1}, storage_options=options)
    step(fabric, model, optimizer)
    fabric.save(url, {"model": model, "optimizer": optimizer, "step": 2, "note": "hi"}, storage_options=options)
    fabric.save(local, {"model": model, "optimizer": optimizer, "step": 2})
    probe = model(torch.ones(1, 6)).item()
    try:
        fabric.save(local + "-async", {"model": model, "step": 2}, async_=True)
        refused = None
    except ValueError as err:
        refused = str(err)
    fabric2, model2, optimizer2 = fresh(1)  # a second engine in the same processes
    state = {"model": model2, "optimizer": optimizer2, "step": 0}
    rest = fabric2.load(url, state, storage_options=options)
    loaded_probe = model2(torch.ones(1, 6)).item()
    if fabric.global_rank == 0:
        print("RESULT", json.dumps({"probe": probe, "loaded": loaded_probe, "step": state["step"], "rest": rest, "refused": refused}))
    """
)
LOAD_LOCAL = textwrap.dedent(
    r"""
    import json, sys
    import torch
    from torch import nn
    from fabric_core import Fabric
    from fabric_deepspeed import DeepSpeedStrategy

    fabric = Fabric(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=2))
    fabric.launch()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=0.01))
    try:
        fabric.load(sys.argv[1], {"model": model, "optimizer": optimizer})
        out = {"error": None}
    except Exception as err:
        out = {"error": type(err).__name__, "message": str(err)}
    if fabric.global_rank == 0:
        print("RESULT", json.dumps(out))
    """
)


def _run(tmp_path: Path, source: str, *args: str) -> dict:
    script = tmp_path / "job.py"
    script.write_text(source)
    env = {**os.environ, **DUMMY_CREDENTIALS, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.timeout(1800)
def test_deepspeed_folder_round_trips_through_s3_and_local_damage_is_named(tmp_path):
    import s3fs
    from fabric_core.plugins.checkpoint_folders import MANIFEST, open_folder

    with moto_server() as options:
        make_bucket(options, "ds-ckpt")
        local = tmp_path / "local-ck"
        result = _run(tmp_path, JOB, "s3://ds-ckpt/run/ck", str(local), json.dumps(options))
        assert result["step"] == 2 and result["rest"] == {"note": "hi"}
        assert result["loaded"] == pytest.approx(result["probe"], rel=1e-6)
        # DeepSpeed folders have no background save: refused with the reason, before anything is written
        assert "not available for DeepSpeed" in result["refused"] and "FSDP" in result["refused"]
        assert not (tmp_path / "local-ck-async").exists()
        fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        entries = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("ds-ckpt/run/ck"))
        versions = [e for e in entries if e.startswith("v-")]
        assert entries == sorted([MANIFEST, *versions]) and len(versions) == 1, entries  # the first save was cleaned
        found = open_folder("s3://ds-ckpt/run/ck", options)
        assert found.manifest.kind == "deepspeed" and "latest" in found.manifest.files
        assert any("optim_states" in name for name in found.manifest.files)
    # the local folder carries the same manifest; a damaged optimizer shard is named before DeepSpeed reads it
    assert (local / MANIFEST).is_file()
    shard = next(p for p in local.rglob("*optim_states.pt") if "rank_1" in p.name)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x08
    shard.write_bytes(bytes(data))
    out = _run(tmp_path, LOAD_LOCAL, str(local))
    assert out["error"] == "CheckpointError"
    assert shard.name in out["message"] and "checksum" in out["message"]
