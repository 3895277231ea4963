"""``TorchCollective``: ``Collective`` on ``torch.distributed`` (gloo, NCCL ...)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import ReduceOp

from fabric_core.plugins.collectives.collective import Collective
from fabric_core.utilities.types import CollectibleGroup

Self = TypeVar("Self", bound="TorchCollective")
_AVERAGE = ("AVG", "MEAN")


class TorchCollective(Collective):
    """Collectives over a ``torch.distributed`` group; without ``create_group`` the default (world) group.

    ``op`` arguments take a ``ReduceOp`` or its name (``"sum"``, ``"max"``, ``"avg"``/``"mean"`` ...);
    an average on a backend without native ``AVG`` (gloo) is a sum divided by the group size.
    ``setup(main_address=..., main_port=..., backend=..., rank=..., world_size=...)`` initialises the
    default group when nothing has; ``teardown`` then also destroys it once no other group is left.
    """

    addr_key = "MASTER_ADDR"
    port_key = "MASTER_PORT"

    def __init__(self) -> None:
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this torch build.")
        super().__init__()
        self._initialised_default_group = False

    @property
    def group(self) -> CollectibleGroup:
        if self._group is None:
            self._group = dist.GroupMember.WORLD
        return super().group

    @property
    def rank(self) -> int:
        """This process's rank within ``group``."""
        return dist.get_rank(self.group)  # type: ignore[arg-type]

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group)  # type: ignore[arg-type]

    def broadcast(self, tensor: Tensor, src: int) -> Tensor:
        dist.broadcast(tensor, src, group=self.group)  # type: ignore[arg-type]
        return tensor

    def all_reduce(self, tensor: Tensor, op: str | ReduceOp | ReduceOp.RedOpType = "sum") -> Tensor:
        native, average = self._native_op(op)
        dist.all_reduce(tensor, op=native, group=self.group)
        if average:
            tensor.div_(self.world_size)
        return tensor

    def reduce(self, tensor: Tensor, dst: int, op: str | ReduceOp | ReduceOp.RedOpType = "sum") -> Tensor:
        native, average = self._native_op(op)
        dist.reduce(tensor, dst, op=native, group=self.group)  # type: ignore[arg-type]
        if average and self.rank == dist.get_group_rank(self.group, dst):  # type: ignore[arg-type]
            tensor.div_(self.world_size)
        return tensor

    def all_gather(self, tensor_list: list[Tensor], tensor: Tensor) -> list[Tensor]:
        dist.all_gather(tensor_list, tensor, group=self.group)
        return tensor_list

    def gather(self, tensor: Tensor, gather_list: list[Tensor], dst: int = 0) -> list[Tensor]:
        dist.gather(tensor, gather_list, dst, group=self.group)  # type: ignore[arg-type]
        return gather_list

    def scatter(self, tensor: Tensor, scatter_list: list[Tensor], src: int = 0) -> Tensor:
        dist.scatter(tensor, scatter_list, src, group=self.group)  # type: ignore[arg-type]
        return tensor

    def reduce_scatter(
        self, output: Tensor, input_list: list[Tensor], op: str | ReduceOp | ReduceOp.RedOpType = "sum"
    ) -> Tensor:
        native, average = self._native_op(op)
        dist.reduce_scatter(output, input_list, op=native, group=self.group)
        if average:
            output.div_(self.world_size)
        return output

    def all_to_all(self, output_tensor_list: list[Tensor], input_tensor_list: list[Tensor]) -> list[Tensor]:
        dist.all_to_all(output_tensor_list, input_tensor_list, group=self.group)
        return output_tensor_list

    def send(self, tensor: Tensor, dst: int, tag: int = 0) -> None:
        dist.send(tensor, dst, tag=tag, group=self.group)  # type: ignore[arg-type]

    def recv(self, tensor: Tensor, src: int | None = None, tag: int = 0) -> Tensor:
        dist.recv(tensor, src, tag=tag, group=self.group)  # type: ignore[arg-type]
        return tensor

    def all_gather_object(self, object_list: list[Any], obj: Any) -> list[Any]:
        dist.all_gather_object(object_list, obj, group=self.group)
        return object_list

    def broadcast_object_list(self, object_list: list[Any], src: int, device: torch.device | None = None) -> list[Any]:
        dist.broadcast_object_list(object_list, src, group=self.group, device=device)  # type: ignore[arg-type]
        return object_list

    def gather_object(self, obj: Any, object_gather_list: list[Any] | None, dst: int = 0) -> list[Any] | None:
        dist.gather_object(obj, object_gather_list, dst, group=self.group)  # type: ignore[arg-type]
        return object_gather_list

    def scatter_object_list(
        self, scatter_object_output_list: list[Any], scatter_object_input_list: list[Any] | None, src: int = 0
    ) -> list[Any]:
        dist.scatter_object_list(scatter_object_output_list, scatter_object_input_list, src, group=self.group)  # type: ignore[arg-type]
        return scatter_object_output_list

    def barrier(self, device_ids: list[int] | None = None) -> None:
        if self.group == dist.GroupMember.NON_GROUP_MEMBER:  # type: ignore[comparison-overlap]
            return  # not in this group: nothing to wait for
        dist.barrier(group=self.group, device_ids=device_ids)  # type: ignore[arg-type]

    def monitored_barrier(self, timeout: timedelta | None = None, wait_all_ranks: bool = False) -> None:
        dist.monitored_barrier(group=self.group, timeout=timeout, wait_all_ranks=wait_all_ranks)  # type: ignore[arg-type]

    def setup(self: Self, main_address: str | None = None, main_port: str | int | None = None, **kwargs: Any) -> Self:
        """Initialise the default group (``torch.distributed.init_process_group(**kwargs)``) unless it is.

        ``main_address``/``main_port`` fill ``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous when
        the environment does not set them; the variables are removed again afterwards.
        """
        if self.is_initialized():
            return self
        added = []
        for key, value in ((self.addr_key, main_address), (self.port_key, main_port)):
            if value is not None and key not in os.environ:
                os.environ[key] = str(value)
                added.append(key)
        try:
            self.init_group(**kwargs)
            self._initialised_default_group = True
        finally:
            for key in added:
                os.environ.pop(key, None)
        return self

    def teardown(self: Self) -> Self:
        """Destroy this instance's group, and the default group if this instance created it and it is the last."""
        member = self.group != dist.GroupMember.NON_GROUP_MEMBER  # type: ignore[comparison-overlap]
        super().teardown()
        world = dist.GroupMember.WORLD
        if self._initialised_default_group and member and world is not None and _only_default_group_left():
            self.destroy_group(world)
            self._initialised_default_group = False
        return self

    @classmethod
    def is_available(cls) -> bool:
        return dist.is_available()

    @classmethod
    def is_initialized(cls) -> bool:
        return cls.is_available() and dist.is_initialized()

    @classmethod
    def init_group(cls, **kwargs: Any) -> None:
        dist.init_process_group(**kwargs)

    @classmethod
    def new_group(cls, **kwargs: Any) -> CollectibleGroup:
        """``torch.distributed.new_group(**kwargs)``; every process of the world must call it, members or not."""
        group: CollectibleGroup = dist.new_group(**kwargs)
        return group

    @classmethod
    def destroy_group(cls, group: CollectibleGroup) -> None:
        # processes outside the group hold a placeholder that is not a registered group
        if group in dist.distributed_c10d._world.pg_map:
            dist.destroy_process_group(group)

    def _native_op(self, op: str | ReduceOp | ReduceOp.RedOpType) -> tuple[Any, bool]:
        """The ``ReduceOp`` to call torch with, and whether to divide by the group size afterwards."""
        if isinstance(op, str):
            name = op.upper()
            if name in _AVERAGE:
                op = ReduceOp.AVG
            else:
                found = getattr(ReduceOp, name, None)
                if found is None or name.startswith("_"):
                    valid = ", ".join(n.lower() for n in ("sum", "product", "min", "max", "avg", "band", "bor", "bxor"))
                    raise ValueError(f"op {op!r} is not a member of `ReduceOp`; valid names: {valid}.")
                op = found
        elif not isinstance(op, (ReduceOp, ReduceOp.RedOpType)):
            raise ValueError(f"Unsupported op {op!r} of type {type(op).__name__}; pass a ReduceOp or its name.")
        if op == ReduceOp.AVG and dist.get_backend(self.group) == "gloo":  # type: ignore[arg-type]
            return ReduceOp.SUM, True
        return op, False


def _only_default_group_left() -> bool:
    return len(dist.distributed_c10d._world.pg_map) == 1
