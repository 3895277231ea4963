"""SPMD: one process drives every XLA device through a device mesh; the compiler partitions the work."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.tensors import apply_to_tensors, move_to_device
from torch import Tensor

from fabric_xla import probe
from fabric_xla.strategies.base import XLAStrategyBase

if TYPE_CHECKING:
    from torch.nn import Module

MODES = ("data_parallel", "fully_sharded")


class XLASPMDStrategy(XLAStrategyBase):
    """Single-program multiple-data over a 1-D mesh of all XLA devices (PyTorch/XLA's SPMD mode).

    One process (world size 1) sees global tensors. Each batch from ``fabric.setup_dataloaders`` is
    split along its first dimension over the devices, so the loader's batch size is the global batch
    size. ``mode="data_parallel"`` replicates the parameters (XLA inserts the gradient all-reduce);
    ``mode="fully_sharded"`` also shards every parameter along its largest dimension (torch_xla's
    FSDPv2), which cuts parameter and optimizer memory by the number of devices. Parameters keep their
    global shape, so ``state_dict``/``fabric.save`` give ordinary full tensors.

    SPMD is a switch of the whole process: once on, every XLA tensor in it is a global tensor. The
    mesh spans all devices of the runtime (XLA requires that), so ``devices`` must be all of them.
    """

    name = "xla_spmd"
    # One process drives every device: plan resolution accepts devices>1 with a world size of 1.
    is_distributed = False
    one_process_drives_all_devices = True
    supports_no_backward_sync = False

    def __init__(self, mode: str = "data_parallel", axis_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise MisconfigurationError(
                f"mode={mode!r} is not valid for strategy {self.name!r}; choose one of {', '.join(MODES)}."
            )
        self.mode = mode
        if mode == "fully_sharded":
            vars(self)["name"] = "xla_spmd_fsdp"  # the registry name this mode is known by (an instance value)
        self.axis_name = axis_name or ("fsdp" if mode == "fully_sharded" else "data")
        self._mesh: Any = None
        self._sharded: weakref.WeakSet[Module] = weakref.WeakSet()

    def _fresh_runtime_state(self) -> dict[str, Any]:
        return {**super()._fresh_runtime_state(), "_sharded": weakref.WeakSet()}

    @property
    def root_device(self) -> torch.device:
        return torch.device("xla", 0)

    @property
    def mesh(self) -> Any:
        """The ``torch_xla.distributed.spmd.Mesh`` over all devices (after the environment is set up)."""
        if self._mesh is None:
            raise RuntimeError("The SPMD mesh exists once Fabric has set up the environment (fabric.launch()).")
        return self._mesh

    @property
    def num_devices(self) -> int:
        return len(self.parallel_devices) if self.parallel_devices else 1

    def validate(self) -> None:
        """No processes to start; refuse device counts the mesh cannot have, before anything runs."""
        if self.num_nodes > 1:
            raise MisconfigurationError(
                f"strategy {self.name!r} runs on one host; num_nodes={self.num_nodes} is not supported."
            )
        available = probe.local_device_count()
        if available and self.num_devices != available:
            raise MisconfigurationError(
                f"strategy {self.name!r} spans every XLA device of the host ({available}); XLA meshes cannot use a "
                f"subset, but devices asks for {self.num_devices}. Use devices='auto' (or {available})."
            )

    def setup_environment(self) -> None:
        super().setup_environment()
        import numpy as np
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        if not xr.is_spmd():
            xr.use_spmd()
        count = xr.global_runtime_device_count()
        if count != self.num_devices:
            raise MisconfigurationError(
                f"strategy {self.name!r} spans all {count} XLA devices of the runtime, but devices asks for {self.num_devices}."
            )
        self._mesh = xs.Mesh(np.arange(count), (count,), (self.axis_name,))

    # ------------------------------------------------------------------- set-up
    def setup_module(self, module: Module) -> Module:
        if self.mode == "data_parallel":
            return module
        from torch_xla.experimental.spmd_fully_sharded_data_parallel import SpmdFullyShardedDataParallel

        if module in self._sharded:
            raise ValueError(
                f"This module was already set up with strategy {self.name!r}; a second set-up would shard its "
                "parameters twice. Set it up once and reuse the module fabric.setup returned."
            )
        self._sharded.add(module)
        return SpmdFullyShardedDataParallel(module, mesh=self.mesh, shard_output=self._shard_output)

    def _shard_output(self, output: Any, mesh: Any) -> None:
        """Shard every output tensor along its first (batch) dimension, as FSDPv2 needs."""
        import torch_xla.distributed.spmd as xs

        def mark(t: Tensor) -> Tensor:
            if t.dim() > 0 and t.device.type == "xla":
                xs.mark_sharding(t, mesh, (self.axis_name,) + (None,) * (t.dim() - 1))
            return t

        apply_to_tensors(output, mark)

    def process_dataloader(self, dataloader: Any, device: torch.device | None) -> Any:
        """``None``: each batch is moved by ``batch_to_device``, which shards every tensor along its own first
        dimension (torch_xla's loader takes one sharding for all tensors of a batch, whatever their rank)."""
        return None

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        """Move the batch to the devices, each tensor split along its first dimension over the mesh."""
        moved = move_to_device(batch, device or self.root_device)
        if self._mesh is None:
            return moved
        import torch_xla.distributed.spmd as xs

        def shard(t: Tensor) -> Tensor:
            if t.dim() > 0 and t.device.type == "xla":
                xs.mark_sharding(t, self._mesh, (self.axis_name,) + (None,) * (t.dim() - 1))
            return t

        return apply_to_tensors(moved, shard)
