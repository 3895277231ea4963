"""The distribution: cheap import, lazy public names, version and plugin-API declarations."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import fabric_cuda
import pytest
from fabric_core.plugins.api_version import PLUGIN_API_VERSION
from fabric_core.registry import api_versions_compatible
from fabric_cuda.__about__ import FABRIC_PLUGIN_API, __version__


def test_import_is_cheap_and_needs_no_gpu_stack() -> None:
    script = (
        "import json, sys, fabric_cuda; print(json.dumps(sorted(m for m in ('torch', 'pynvml') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip()) == []


def test_public_names_load_on_first_use() -> None:
    assert set(dir(fabric_cuda)) >= {"CUDAAccelerator", "find_usable_cuda_devices", "CUDAMixedPrecision"}
    assert callable(fabric_cuda.find_usable_cuda_devices)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fabric_cuda.nope


def test_declares_a_plugin_api_this_core_accepts() -> None:
    assert api_versions_compatible(PLUGIN_API_VERSION, FABRIC_PLUGIN_API)
    entries = {ep.name: ep.value for ep in metadata.entry_points(group="fabric_core.plugin_api")}
    assert entries["fabric_cuda"] == "fabric_cuda.__about__:FABRIC_PLUGIN_API"


def test_version_and_core_pin() -> None:
    assert metadata.version("fabric-cuda") == __version__
    requires = [r.replace(" ", "") for r in metadata.requires("fabric-cuda") or []]
    assert "fabric-core<0.2,>=0.1.0" in requires or "fabric-core>=0.1.0,<0.2" in requires
    assert any(r.startswith("nvidia-ml-py") for r in requires)
