"""``SingleDeviceCollective``: the collectives of a world of one process (each is the identity)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fabric_core.plugins.collectives.collective import Collective
from fabric_core.utilities.types import CollectibleGroup


class _OneProcessGroup:
    def size(self) -> int:
        return 1

    def rank(self) -> int:
        return 0


class SingleDeviceCollective(Collective):
    """Lets code written against ``Collective`` run unchanged in one process."""

    @property
    def rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    def broadcast(self, tensor: Tensor, src: int) -> Tensor:
        return tensor

    def all_reduce(self, tensor: Tensor, op: Any = "sum") -> Tensor:
        return tensor

    def reduce(self, tensor: Tensor, dst: int, op: Any = "sum") -> Tensor:
        return tensor

    def all_gather(self, tensor_list: list[Tensor], tensor: Tensor) -> list[Tensor]:
        return [tensor]

    def gather(self, tensor: Tensor, gather_list: list[Tensor], dst: int = 0) -> list[Tensor]:
        return [tensor]

    def scatter(self, tensor: Tensor, scatter_list: list[Tensor], src: int = 0) -> Tensor:
        return scatter_list[0]

    def reduce_scatter(self, output: Tensor, input_list: list[Tensor], op: Any = "sum") -> Tensor:
        return input_list[0]

    def all_to_all(self, output_tensor_list: list[Tensor], input_tensor_list: list[Tensor]) -> list[Tensor]:
        return input_tensor_list

    def send(self, tensor: Tensor, dst: int, tag: int = 0) -> None:
        return None

    def recv(self, tensor: Tensor, src: int | None = None, tag: int = 0) -> Tensor:
        return tensor

    def barrier(self, device_ids: list[int] | None = None) -> None:
        return None

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def is_initialized(cls) -> bool:
        return True

    @classmethod
    def init_group(cls, **kwargs: Any) -> None:
        return None

    @classmethod
    def new_group(cls, **kwargs: Any) -> CollectibleGroup:
        return _OneProcessGroup()

    @classmethod
    def destroy_group(cls, group: CollectibleGroup) -> None:
        return None
