"""The environment the documentation's scripts run in, and the preloaded interpreter they start from."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# fabric-core's test helpers (as fabric-deepspeed's tests reach s3_server): one server, kept in one place.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "packages" / "fabric-core" / "tests"))
from preloaded_python import PreloadedPython


def script_env() -> dict[str, str]:
    """What a reader's shell gives a script, made reproducible (hash seed) and quiet on a 2-core machine."""
    return {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def preloaded_python() -> Iterator[PreloadedPython]:
    """One server with torch and fabric_core imported; each ``python script.py`` block runs in a fork of it."""
    server = PreloadedPython(script_env())
    yield server
    server.close()
