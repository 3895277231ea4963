"""The precisions XLA devices run: float32, bfloat16 weights, and bfloat16 autocast."""

from __future__ import annotations

import torch
from fabric_core.plugins.bases import MixedPrecision, TrueDtypePrecision
from fabric_core.plugins.precision import Precision


def xla_precision(name: str) -> Precision | None:
    """The implementation of ``name`` on XLA, or ``None`` for names XLA leaves to the registry.

    ``bf16-mixed`` autocasts with ``torch.autocast("xla")``, which torch_xla 2.9 supports on every
    PJRT device (``torch_xla.amp.autocast`` instead ignores autocast on XLA:CPU). bfloat16 needs no
    gradient scaler.
    """
    if name == "32-true":
        return Precision()
    if name == "bf16-true":
        return TrueDtypePrecision("bf16-true", torch.bfloat16)
    if name == "bf16-mixed":
        return MixedPrecision("bf16-mixed", torch.bfloat16, "xla")
    return None
