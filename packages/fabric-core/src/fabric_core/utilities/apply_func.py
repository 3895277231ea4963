"""Apply a function to every tensor inside nested collections (dicts, lists, tuples, dataclasses)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch


def apply_to_tensors(data: Any, function: Callable[[torch.Tensor], Any]) -> Any:
    """Return ``data`` with ``function`` applied to each tensor; other leaves are kept as they are."""
    if isinstance(data, torch.Tensor):
        return function(data)
    if isinstance(data, Mapping):
        items = {k: apply_to_tensors(v, function) for k, v in data.items()}
        if type(data) is dict:
            return items
        try:
            mapping_type: Any = type(data)
            return mapping_type(items)
        except TypeError:  # mappings whose constructor takes other arguments (defaultdict)
            return items
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, function) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_tensors(v, function) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {
            f.name: apply_to_tensors(getattr(data, f.name), function) for f in dataclasses.fields(data) if f.init
        }
        return dataclasses.replace(data, **changes)
    return data


def move_to_device(data: Any, device: torch.device | str) -> Any:
    """Move every tensor (and module) in ``data`` to ``device``; non-blocking where that is safe."""
    device = torch.device(device)
    if isinstance(data, torch.nn.Module):
        return data.to(device)
    non_blocking = device.type not in ("cpu", "mps")

    def move(t: torch.Tensor) -> torch.Tensor:
        return t if t.device == device else t.to(device, non_blocking=non_blocking)

    return apply_to_tensors(data, move)


def convert_floating(data: Any, dtype: torch.dtype) -> Any:
    """Cast floating-point tensors in ``data`` to ``dtype``; integer tensors are kept."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if torch.is_floating_point(t) and t.dtype != dtype else t

    return apply_to_tensors(data, cast)


#: Lightning's name for ``move_to_device``.
move_data_to_device = move_to_device


def convert_tensors_to_scalars(data: Any) -> Any:
    """Replace every one-element tensor in ``data`` by its Python number (``data`` itself is not changed).

    Lightning's name; a tensor with more than one element cannot stand for a metric value and is refused.
    """

    def to_scalar(t: torch.Tensor) -> Any:
        if t.numel() != 1:
            raise ValueError(
                f"The metric `{t}` does not contain a single element, thus it cannot be converted to a scalar."
            )
        return t.item()

    return apply_to_tensors(data, to_scalar)


def convert_to_tensors(data: Any, device: torch.device | str) -> Any:
    """``data`` with every Python or NumPy number and NumPy array turned into a tensor, all moved to ``device``.

    As in Lightning, ``bool`` (an ``int``) becomes a tensor too.
    """
    import numbers

    def to_tensors(value: Any) -> Any:
        if isinstance(value, numbers.Number):
            return torch.tensor(value, device=device)
        if type(value).__module__ == "numpy" and hasattr(value, "__array__"):
            return torch.as_tensor(value, device=device)
        if isinstance(value, Mapping):
            return {k: to_tensors(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(to_tensors(v) for v in value)
        return value

    return move_to_device(to_tensors(data), device)
