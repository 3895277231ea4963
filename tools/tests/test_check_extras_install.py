"""tools/check_extras_install.py: what it expects an extra to install, and how it judges the result.

The install itself (a fresh venv, minutes) is run by hand: python tools/check_extras_install.py.
"""

from __future__ import annotations

from pathlib import Path

import check_extras_install as cei
import pytest
from workspace import discover


def test_expected_siblings_come_from_core_extras(workspace: Path) -> None:
    core = discover(workspace)["fabric-core"]
    assert cei.expected_siblings(core, ["loggers"]) == {"fabric-core", "fabric-loggers"}
    assert cei.expected_siblings(core, ["all"]) == {"fabric-core", "fabric-cuda", "fabric-loggers"}
    with pytest.raises(cei.CheckFailed, match="no extra 'tpu'"):
        cei.expected_siblings(core, ["tpu"])


def test_registered_plugins_must_match_what_was_installed(workspace: Path) -> None:
    dists = discover(workspace)
    expected = {"fabric-core", "fabric-loggers"}
    cei.check_registered({"accelerator": ["cpu"], "strategy": [], "precision": []}, dists, expected)
    with pytest.raises(cei.CheckFailed, match="should not be installed"):
        cei.check_registered({"accelerator": ["cpu", "fabric_cuda"], "strategy": [], "precision": []}, dists, expected)
    with pytest.raises(cei.CheckFailed, match="not registered"):
        cei.check_registered(
            {"accelerator": ["cpu"], "strategy": [], "precision": []}, dists, expected | {"fabric-cuda"}
        )
