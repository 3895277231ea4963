"""On two real GPUs: DDP over NCCL (spawned and forked workers) and FSDP, in several precisions.

Each case runs tests/scripts/distributed_train.py in a fresh interpreter, as a user's script would run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.cuda2]

SCRIPT = Path(__file__).parent / "scripts" / "distributed_train.py"


@pytest.mark.parametrize(
    ("strategy", "precision"),
    [
        ("ddp_spawn", "32-true"),
        ("ddp_spawn", "16-mixed"),
        ("ddp_spawn", "bf16-mixed"),
        ("ddp_fork", "16-mixed"),  # the parent resolved a CUDA plan and must still be fork-safe
        ("fsdp", "32-true"),
        ("fsdp", "bf16-mixed"),
    ],
)
def test_two_gpus_train_together(tmp_path: Path, strategy: str, precision: str) -> None:
    if precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{precision} needs a GPU with native bfloat16")
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--strategy", strategy, "--precision", precision],
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0,1")},
        check=False,
    )
    assert done.returncode == 0, f"{strategy}/{precision} failed:\n{done.stdout}\n{done.stderr}"
    result = json.loads(out.read_text())
    assert result["world_size"] == 2
    assert result["backend"] == "nccl"
    assert result["ranks"] == [0, 1]
    assert result["devices"] == [0, 1]  # one GPU per rank
    first, last = sum(result["first_losses"]) / 3, sum(result["last_losses"]) / 3
    assert last < 0.25 * first, f"loss went from {first:.3f} to {last:.3f}"
    assert result["same_parameters"]  # DDP kept the replicas identical
    assert result["skipped_steps"] < 10
