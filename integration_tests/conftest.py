"""Integration tests: scripts a user would write, run as real processes with every package installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(
    args: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FABRIC_CLI_", "MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))
    }
    full_env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def runner(tmp_path: Path):
    def go(*args: str, **kwargs):
        return run(list(args), cwd=tmp_path, **kwargs)

    return go


PYTHON = sys.executable
EXAMPLE = str(ROOT / "examples" / "digits.py")
