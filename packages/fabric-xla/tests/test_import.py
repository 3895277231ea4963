"""Importing fabric_xla is cheap and safe; without a usable torch_xla, XLA fails with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fabric_core import registry
from xla_helpers import torch_xla_problem


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_import_and_plan_resolution_do_not_import_torch_xla():
    # The parent of xmp.spawn must not start the XLA runtime; not importing torch_xla at all is the safe bet.
    code = (
        "import sys\n"
        "import fabric_xla\n"
        "from fabric_xla import XLAAccelerator\n"
        "XLAAccelerator.is_available(); XLAAccelerator.auto_device_count()\n"
        "from fabric_core.connector import resolve_plan\n"
        "resolve_plan(accelerator='auto')\n"
        "try:\n"
        "    resolve_plan(accelerator='tpu', devices=1, precision='bf16-mixed')\n"
        "except ImportError:\n"
        "    pass\n"
        "assert 'torch_xla' not in sys.modules, 'torch_xla was imported'\n"
        "print('ok')\n"
    )
    result = _run(code, PJRT_DEVICE="CPU")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_entry_points_register_accelerators_and_strategies():
    assert registry.available("accelerator")["tpu"].distribution == "fabric-xla"
    assert registry.available("accelerator")["xla"].distribution == "fabric-xla"
    assert {"single_xla", "xla", "xla_fsdp", "xla_spmd", "xla_spmd_fsdp"} <= set(registry.available("strategy"))
    registry.check_api_version("fabric-xla")  # the handshake accepts our declared version


@pytest.mark.skipif(torch_xla_problem() is None, reason="torch_xla works here; this checks an environment without it")
def test_accelerator_tpu_without_usable_torch_xla_says_what_to_install():
    from fabric_core import Fabric
    from fabric_xla import XLAUnavailableError

    with pytest.raises(XLAUnavailableError, match=r"pip install torch==2\.9\.0 torch_xla==2\.9\.0") as info:
        Fabric(accelerator="tpu")
    assert "torch" in str(info.value)
    # "auto" never fails because of a missing backend: it trains on the CPU.
    assert Fabric(accelerator="auto").accelerator.name == "cpu"


def test_broken_torch_xla_install_fails_with_the_versions_when_xla_is_used(tmp_path):
    # A torch_xla whose import fails (as with a torch it was not built for): hide it from the importer.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch_xla' or name.startswith('torch_xla.'):\n"
        "            raise ImportError('undefined symbol: _ZN5torch3jit (simulated)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fabric_xla.xla_import import require_torch_xla\n"
        "from fabric_xla import XLAUnavailableError\n"
        "try:\n"
        "    require_torch_xla()\n"
        "except XLAUnavailableError as err:\n"
        "    print('MESSAGE', err)\n"
    )
    result = _run(code, PJRT_DEVICE="CPU")
    assert result.returncode == 0, result.stderr
    problem = torch_xla_problem()
    if problem is None or "does not import" in problem:
        assert "cannot be loaded (undefined symbol" in result.stdout
        assert "--force-reinstall" in result.stdout
    else:  # torch_xla missing or mismatched: the metadata check already says so
        assert "pip install torch==2.9.0 torch_xla==2.9.0" in result.stdout
