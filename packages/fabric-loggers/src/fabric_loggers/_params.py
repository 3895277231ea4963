"""Hyperparameters as users pass them (dict, argparse.Namespace, dataclass, nested) made storable."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
from collections.abc import Mapping
from typing import Any

from fabric_loggers._metrics import as_scalar


def _as_mapping(params: Any) -> Mapping[str, Any] | None:
    if isinstance(params, argparse.Namespace):
        return vars(params)
    if isinstance(params, Mapping):
        return params
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}
    return None


def params_to_dict(params: Any) -> dict[str, Any]:
    """The top level of ``params`` as a dict, or a ``TypeError`` listing what is accepted."""
    mapping = _as_mapping(params)
    if mapping is None:
        raise TypeError(
            "log_hyperparams accepts a dict (nested dicts allowed), an argparse.Namespace or a dataclass "
            f"instance, got {type(params).__name__}."
        )
    return {str(key): value for key, value in mapping.items()}


def flatten(params: Mapping[str, Any], separator: str = "/") -> dict[str, Any]:
    """Nested dicts/Namespaces/dataclasses become ``outer/inner`` keys, as TensorBoard shows one level."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        nested = _as_mapping(value)
        if nested is not None and nested:
            for inner_key, inner_value in flatten(params_to_dict(nested), separator).items():
                flat[f"{key}{separator}{inner_key}"] = inner_value
        else:
            flat[str(key)] = value
    return flat


def tensorboard_value(value: Any) -> bool | int | float | str:
    """What TensorBoard's hparams can hold (bool, number, str); anything else becomes its ``str``."""
    value = as_scalar(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value) if isinstance(value.value, str) else str(value)
    return str(value)


def yaml_value(value: Any) -> Any:
    """A value PyYAML's safe dumper can write; nesting is kept, unknown objects become their ``str``."""
    value = as_scalar(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    nested = _as_mapping(value)
    if nested is not None:
        return {str(key): yaml_value(item) for key, item in nested.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [yaml_value(item) for item in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return yaml_value(value.value)
    tolist = getattr(value, "tolist", None)  # tensors and arrays with several elements
    if callable(tolist):
        return yaml_value(tolist())
    return str(value)
