"""What the ``fabric_core.accelerators`` entry points load: the accelerator, after a cheap check.

Loading ``XLAAccelerator`` through here raises ``XLAUnavailableError`` (an ``ImportError``) when
torch_xla is missing, built for another torch, or there is no device to run on. Core's
``accelerator="auto"`` skips accelerators whose import fails, while ``accelerator="tpu"`` shows the
message. ``from fabric_xla import XLAAccelerator`` itself always works.
"""

from __future__ import annotations

from typing import Any

from fabric_xla.errors import XLAUnavailableError


def __getattr__(name: str) -> Any:
    if name != "XLAAccelerator":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from fabric_xla import probe
    from fabric_xla.accelerator import NO_DEVICE, XLAAccelerator
    from fabric_xla.xla_import import check_installation

    check_installation()
    if not probe.device_configured():
        raise XLAUnavailableError(f"No XLA device to run on: {NO_DEVICE}.")
    return XLAAccelerator
