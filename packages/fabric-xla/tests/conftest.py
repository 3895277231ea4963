"""fabric-xla test set-up: run on PyTorch/XLA's CPU device unless a TPU leg chose otherwise."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: object) -> None:
    # The xla_cpu nox session sets these; default them so that a bare `pytest` runs the same tests.
    # Only the tests' own process (and the scenario subprocesses it starts) see them.
    if "PJRT_DEVICE" not in os.environ:
        os.environ["PJRT_DEVICE"] = "CPU"
        os.environ.setdefault("CPU_NUM_DEVICES", "2")


@pytest.fixture
def fabric():
    """A launched one-device XLA Fabric (the tests that ask for it are marked ``requires_xla``)."""
    from fabric_core import Fabric

    fabric = Fabric(accelerator="tpu", devices=1)
    fabric.launch()
    return fabric
