"""Finding the ``deepspeed`` library without importing it (importing it takes seconds)."""

from __future__ import annotations

import importlib.util
import sys

from fabric_core.errors import PluginNotInstalledError

INSTALL_HINT = "pip install deepspeed"


def deepspeed_available() -> bool:
    """Whether ``import deepspeed`` would find the library (checked without importing it)."""
    if sys.modules.get("deepspeed") is not None:
        return True
    try:
        return importlib.util.find_spec("deepspeed") is not None
    except (ImportError, ValueError):
        return False


def require_deepspeed() -> None:
    """Raise the install hint when the library is missing, so that the job fails before it starts."""
    if not deepspeed_available():
        raise PluginNotInstalledError(
            "The DeepSpeed strategies need the `deepspeed` library, which is not installed in this environment. "
            f"Install it with: {INSTALL_HINT}  (fabric-deepspeed declares it, so `pip install fabric-deepspeed` "
            "in a fresh environment brings it too)."
        )
