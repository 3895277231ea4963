"""Whether Python runs interactively: there is then no script file to re-run for other processes."""

from __future__ import annotations

import sys


def interactive_session() -> bool:
    """True in a REPL, under ``python -i`` and in a Jupyter/IPython kernel."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules
