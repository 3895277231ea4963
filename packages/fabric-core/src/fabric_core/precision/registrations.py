"""Factories registered under ``fabric_core.precision``: each builds a precision for a device type."""

from __future__ import annotations

import torch

from fabric_core.plugins.precision import Precision
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import DoublePrecision, HalfPrecision


def true_32(device_type: str = "cpu") -> Precision:
    return Precision()


def true_64(device_type: str = "cpu") -> Precision:
    return DoublePrecision()


def true_16(device_type: str = "cpu") -> Precision:
    return HalfPrecision("16-true")


def true_bf16(device_type: str = "cpu") -> Precision:
    return HalfPrecision("bf16-true")


def mixed_bf16(device_type: str = "cpu") -> Precision:
    return MixedPrecision("bf16-mixed", torch.bfloat16, device_type)


def mixed_16(device_type: str = "cpu") -> Precision:
    """float16 autocast without a scaler; accelerators that need one (CUDA) provide their own."""
    return MixedPrecision("16-mixed", torch.float16, device_type)
