"""Bringing XLA tensors to the host before a checkpoint is written."""

from __future__ import annotations

from typing import Any

from fabric_core.plugins.tensors import apply_to_tensors
from torch import Tensor


def to_cpu(data: Any) -> Any:
    """``data`` with every XLA tensor copied to the CPU (after the pending graph was executed)."""
    import torch_xla

    torch_xla.sync()

    def move(t: Tensor) -> Tensor:
        return t.cpu() if t.device.type == "xla" else t

    return apply_to_tensors(data, move)
