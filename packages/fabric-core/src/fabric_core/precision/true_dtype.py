"""Precisions that store and compute everything in one dtype (64-true, 16-true, bf16-true)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import Module

from fabric_core.plugins.precision import Precision, default_dtype
from fabric_core.utilities.apply_func import convert_floating


class TrueDtypePrecision(Precision):
    """Parameters, inputs and activations in ``dtype``; outputs come back in the default dtype."""

    is_identity = False

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name  # type: ignore[misc]
        self.dtype = dtype

    @property
    def precision(self) -> str:
        """Lightning's name for ``name``."""
        return self.name

    def convert_module(self, module: Module) -> Module:
        # Floating tensors only: ``module.to(dtype)`` would also cast complex buffers to a real dtype and drop
        # their imaginary part. Integer and complex tensors keep their dtype (as ``module.double()`` does).
        dtype = self.dtype
        return module._apply(lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t)

    def tensor_init_context(self) -> Any:
        return default_dtype(self.dtype)

    def forward_context(self) -> Any:
        """Tensors created during the forward pass get ``dtype`` too, as in Lightning."""
        return default_dtype(self.dtype)

    def convert_input(self, data: Any) -> Any:
        return convert_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating(data, torch.get_default_dtype())


class DoublePrecision(TrueDtypePrecision):
    """``64-true`` under Lightning's class name: ``DoublePrecision()``."""

    def __init__(self) -> None:
        super().__init__("64-true", torch.float64)


class HalfPrecision(TrueDtypePrecision):
    """``16-true`` or ``bf16-true`` under Lightning's class name: ``HalfPrecision(precision="bf16-true")``."""

    def __init__(self, precision: str = "16-true") -> None:
        if precision not in ("16-true", "bf16-true"):
            raise ValueError(
                f"Passed `HalfPrecision(precision={precision!r})`. Precision must be '16-true' or 'bf16-true'."
            )
        super().__init__(precision, torch.bfloat16 if precision == "bf16-true" else torch.float16)
