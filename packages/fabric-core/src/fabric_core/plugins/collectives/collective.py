"""The ``Collective`` interface: collective operations bound to one process group."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

from torch import Tensor

from fabric_core.utilities.types import CollectibleGroup

Self = TypeVar("Self", bound="Collective")


class Collective(ABC):
    """Collective operations over one group; ``create_group`` binds an instance to a new group.

    Every method returns the tensor (or list) it filled, so calls chain like torch's own in-place ops.
    """

    def __init__(self) -> None:
        self._group: CollectibleGroup | None = None

    @property
    @abstractmethod
    def rank(self) -> int:
        """This process's rank within ``group``."""

    @property
    @abstractmethod
    def world_size(self) -> int:
        """How many processes ``group`` has."""

    @property
    def group(self) -> CollectibleGroup:
        """The group this instance's collectives run on."""
        if self._group is None:
            raise RuntimeError(
                f"`{type(self).__name__}` does not own a group. HINT: try `collective.create_group().group`"
            )
        return self._group

    @abstractmethod
    def broadcast(self, tensor: Tensor, src: int) -> Tensor: ...

    @abstractmethod
    def all_reduce(self, tensor: Tensor, op: Any = "sum") -> Tensor: ...

    @abstractmethod
    def reduce(self, tensor: Tensor, dst: int, op: Any = "sum") -> Tensor: ...

    @abstractmethod
    def all_gather(self, tensor_list: list[Tensor], tensor: Tensor) -> list[Tensor]: ...

    @abstractmethod
    def gather(self, tensor: Tensor, gather_list: list[Tensor], dst: int = 0) -> list[Tensor]: ...

    @abstractmethod
    def scatter(self, tensor: Tensor, scatter_list: list[Tensor], src: int = 0) -> Tensor: ...

    @abstractmethod
    def reduce_scatter(self, output: Tensor, input_list: list[Tensor], op: Any = "sum") -> Tensor: ...

    @abstractmethod
    def all_to_all(self, output_tensor_list: list[Tensor], input_tensor_list: list[Tensor]) -> list[Tensor]: ...

    @abstractmethod
    def send(self, tensor: Tensor, dst: int, tag: int = 0) -> None: ...

    @abstractmethod
    def recv(self, tensor: Tensor, src: int | None = None, tag: int = 0) -> Tensor: ...

    @abstractmethod
    def barrier(self, device_ids: list[int] | None = None) -> None: ...

    @classmethod
    @abstractmethod
    def is_available(cls) -> bool: ...

    @classmethod
    @abstractmethod
    def is_initialized(cls) -> bool: ...

    @classmethod
    @abstractmethod
    def init_group(cls, **kwargs: Any) -> None: ...

    @classmethod
    @abstractmethod
    def new_group(cls, **kwargs: Any) -> CollectibleGroup: ...

    @classmethod
    @abstractmethod
    def destroy_group(cls, group: CollectibleGroup) -> None: ...

    def setup(self: Self, **kwargs: Any) -> Self:
        """Initialise the default group (``init_group(**kwargs)``) unless it already is."""
        if not self.is_initialized():
            self.init_group(**kwargs)
        return self

    def create_group(self: Self, **kwargs: Any) -> Self:
        """Bind this instance to a new group (``new_group(**kwargs)``, e.g. ``ranks=[0, 1]``); call after ``setup``."""
        if self._group is not None:
            raise RuntimeError(f"`{type(self).__name__}` already owns a group.")
        self._group = self.new_group(**kwargs)
        return self

    def teardown(self: Self) -> Self:
        """Destroy the group this instance owns."""
        if self._group is None:
            raise RuntimeError(f"`{type(self).__name__}` does not own a group to destroy.")
        self.destroy_group(self._group)
        self._group = None
        return self
