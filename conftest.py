"""Shared pytest behaviour: hardware markers skip where the hardware is absent, or fail when required.

Set FABRIC_REQUIRE_HARDWARE=1 on a runner that must have the hardware: a missing device then fails
the test instead of skipping it.
"""

from __future__ import annotations

import os

import pytest


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _tpu_available() -> bool:
    """A TPU is there and meant to be used; checked without starting XLA's runtime in this process
    (which would hold the chips and starve the worker processes the tests start)."""
    import glob
    import importlib.util

    if os.environ.get("PJRT_DEVICE") != "TPU" or importlib.util.find_spec("torch_xla") is None:
        return False
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")) or "TPU_NAME" in os.environ


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs = []
    if item.get_closest_marker("cuda") and _cuda_devices() < 1:
        needs.append("an NVIDIA GPU")
    if item.get_closest_marker("cuda2") and _cuda_devices() < 2:
        needs.append("two NVIDIA GPUs")
    if item.get_closest_marker("tpu") and not _tpu_available():
        needs.append("a TPU (PJRT_DEVICE=TPU)")
    if not needs:
        return
    message = f"needs {' and '.join(needs)}, which this machine does not have"
    if os.environ.get("FABRIC_REQUIRE_HARDWARE") == "1":
        pytest.fail(f"FABRIC_REQUIRE_HARDWARE=1 but this test {message}", pytrace=False)
    pytest.skip(message)
