"""``precision="16-mixed"`` with DeepSpeed on the CPU trains, as under Lightning Fabric 2.6 (which hands the
precision straight to DeepSpeed; DeepSpeed's CPU accelerator runs float16 with its loss scaler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fabric_core import Fabric
from fabric_deepspeed import DeepSpeedPrecision

HERE = Path(__file__).parent


@pytest.mark.parametrize("precision", ["16-mixed", "16-true"])
def test_float16_is_accepted_on_the_cpu(precision: str) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, strategy="deepspeed_stage_2", precision=precision)
    assert isinstance(fabric.strategy.precision, DeepSpeedPrecision)
    assert fabric.strategy.config["fp16"]["enabled"] is True


@pytest.mark.timeout(900)
def test_16_mixed_trains_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "scripts" / "ds_train_named.py"),
            "deepspeed_stage_2",
            "16-mixed",
            str(out),
            "cpu",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads(out.read_text())
    losses = run["losses"]
    assert len(losses) == 12
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
