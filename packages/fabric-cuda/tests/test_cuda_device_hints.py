"""The bf16 and TF32 decisions made once a worker has its GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fabric_cuda.device_hints import TF32_HINT, bf16_problem, wants_tf32_hint


@pytest.mark.parametrize(
    ("precision", "capability", "untouched", "expected"),
    [
        ("32-true", (8, 0), True, True),  # A100, nobody set the matmul precision
        ("32-true", (9, 0), True, True),
        ("32-true", (7, 5), True, False),  # T4 has no TF32
        ("32-true", (8, 6), False, False),  # the user chose
        ("bf16-mixed", (8, 0), True, False),  # matmuls run in bf16 anyway
        ("16-true", (9, 0), True, False),
        (None, (9, 0), True, False),  # precision unknown (a strategy's own plugin)
    ],
)
def test_tf32_hint(precision: str | None, capability: tuple[int, int], untouched: bool, expected: bool) -> None:
    assert wants_tf32_hint(precision, capability, untouched) is expected


def test_tf32_hint_tells_what_to_call() -> None:
    text = TF32_HINT.format(major=8, minor=0)
    assert "8.0" in text and "torch.set_float32_matmul_precision('high')" in text


@pytest.mark.parametrize(
    ("precision", "native", "emulated", "expected"),
    [
        ("bf16-mixed", True, True, None),
        ("bf16-true", True, True, None),
        ("bf16-mixed", False, True, "slow"),  # V100/T4 emulate bf16
        ("bf16-true", False, False, "error"),
        ("16-mixed", False, False, None),
        ("32-true", False, False, None),
    ],
)
def test_bf16_support(precision: str, native: bool, emulated: bool, expected: str | None) -> None:
    assert bf16_problem(precision, native, emulated) == expected


def test_matmul_setting_is_read_from_either_torch_api() -> None:
    """Run in a fresh interpreter: the setting is process-wide and the tests must not leak it."""
    script = """
import json, torch
from fabric_cuda.device_hints import matmul_precision_untouched as untouched
seen = [untouched()]
torch.set_float32_matmul_precision("high"); seen.append(untouched())
torch.set_float32_matmul_precision("highest"); seen.append(untouched())
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, False, False]
