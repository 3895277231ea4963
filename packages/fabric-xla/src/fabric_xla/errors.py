"""The error fabric-xla raises when PyTorch/XLA cannot be used on this machine."""

from __future__ import annotations

from fabric_core.errors import FabricError


class XLAUnavailableError(FabricError, ImportError):
    """torch_xla is missing, does not match the installed torch, or fails to load.

    An ``ImportError`` so that ``accelerator="auto"`` passes over XLA silently, while an explicit
    ``accelerator="tpu"`` shows the message, which names the versions and the pip command that fixes it.
    """
