"""Type aliases and structural types that scripts import (``lightning.fabric.utilities.types`` names).

The underscore aliases (``_PATH``, ``_DEVICE`` ...) keep Lightning's spelling so that imports port
unchanged; each is also available without the underscore.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

import torch
from torch import Tensor
from torch.distributed import ProcessGroup, ReduceOp

_PATH = str | Path
_DEVICE = torch.device | str | int
_MAP_LOCATION_TYPE = _DEVICE | Callable[..., Any] | dict[_DEVICE, _DEVICE] | None
_PARAMETERS = Iterator[torch.nn.Parameter]
PATH = _PATH
DEVICE = _DEVICE
MAP_LOCATION_TYPE = _MAP_LOCATION_TYPE
PARAMETERS = _PARAMETERS
RedOpType = ReduceOp.RedOpType
UntypedStorage = torch.UntypedStorage

_DictKey = TypeVar("_DictKey")


@runtime_checkable
class Stateful(Protocol[_DictKey]):
    """Anything with ``state_dict``/``load_state_dict``: ``fabric.save`` stores it by its state dict."""

    def state_dict(self) -> dict[_DictKey, Any]: ...

    def load_state_dict(self, state_dict: dict[_DictKey, Any]) -> None: ...


_Stateful = Stateful


@runtime_checkable
class CollectibleGroup(Protocol):
    """A process group as collectives see it: a size and this process's rank in it."""

    def size(self) -> int: ...

    def rank(self) -> int: ...


@runtime_checkable
class Steppable(Protocol):
    """Anything with ``step(closure=None)``: an optimizer as the loop sees it."""

    @overload
    def step(self, closure: None = ...) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], float] | None = ...) -> float | None: ...


@runtime_checkable
class Optimizable(Steppable, Protocol):
    """A ``torch.optim.Optimizer`` as Fabric uses it, typed structurally."""

    param_groups: list[dict[Any, Any]]
    defaults: dict[Any, Any]
    state: defaultdict[Tensor, Any]

    def state_dict(self) -> dict[str, dict[Any, Any]]: ...

    def load_state_dict(self, state_dict: dict[str, dict[Any, Any]]) -> None: ...


@runtime_checkable
class LRScheduler(Protocol):
    """A learning-rate scheduler (``torch.optim.lr_scheduler.LRScheduler`` or one shaped like it)."""

    optimizer: Optimizable
    base_lrs: list[float]

    def step(self, epoch: int | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class ReduceLROnPlateau(Protocol):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``: steps on a metric."""

    optimizer: Optimizable
    mode: str

    def step(self, metrics: float | int | Tensor, epoch: int | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


__all__ = [
    "DEVICE",
    "MAP_LOCATION_TYPE",
    "PARAMETERS",
    "PATH",
    "_DEVICE",
    "_MAP_LOCATION_TYPE",
    "_PARAMETERS",
    "_PATH",
    "CollectibleGroup",
    "LRScheduler",
    "Optimizable",
    "ProcessGroup",
    "RedOpType",
    "ReduceLROnPlateau",
    "ReduceOp",
    "Stateful",
    "Steppable",
    "UntypedStorage",
    "_Stateful",
]
