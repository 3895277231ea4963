"""Metric names and values as loggers receive them: prefixed, and checked to be single numbers."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

PREFIX_JOIN = "-"  # ``prefix="train"`` turns ``loss`` into ``train-loss`` (the Lightning convention)


def as_scalar(value: Any) -> Any:
    """A one-element tensor or array, or a NumPy scalar, as a Python number; anything else unchanged."""
    if isinstance(value, (str, bytes, bool, int, float)):
        return value
    item = getattr(value, "item", None)
    if not callable(item):
        return value
    size = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", None)
    return item() if size == 1 else value


def to_number(name: str, value: Any) -> int | float:
    """``value`` as an int or float, or a ``TypeError`` naming the metric."""
    value = as_scalar(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"metric {name!r} must be a single number (int, float, bool, or a one-element tensor/array), "
        f"got {type(value).__name__}: {value!r}."
    )


def prepare_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, int | float]:
    """Names with the logger's prefix, values as plain numbers."""
    if type(metrics) is not dict and not isinstance(metrics, Mapping):  # the ABC check only when not a dict
        raise TypeError(f"log_metrics expects a mapping of metric names to numbers, got {type(metrics).__name__}.")
    prepared = {}
    for key, value in metrics.items():
        name = key if type(key) is str else str(key)
        if type(value) is not float and type(value) is not int:  # the common case skips the checks
            value = to_number(name, value)
        prepared[f"{prefix}{PREFIX_JOIN}{name}" if prefix else name] = value
    return prepared


def check_step(step: Any) -> int:
    """Steps are whole numbers: an int, or a float or a one-element tensor holding one."""
    if type(step) is int:
        return step
    step = as_scalar(step)
    if isinstance(step, int) and not isinstance(step, bool):
        return int(step)
    if isinstance(step, float) and math.isfinite(step) and step.is_integer():
        return int(step)
    raise TypeError(f"step must be a whole number, got {step!r}.")
