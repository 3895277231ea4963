"""Data parallel over XLA devices: one replica per device, gradients all-reduced at the optimizer step."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch
from fabric_core.errors import MisconfigurationError
from torch import Tensor

from fabric_xla import collectives, probe
from fabric_xla.strategies.base import XLAStrategyBase

if TYPE_CHECKING:
    from torch.nn import Module
    from torch.optim import Optimizer

CPU_COLLECTIVES_BUG = (
    "On PyTorch/XLA's CPU device (PJRT_DEVICE=CPU) collectives between several replicas hang in XLA's "
    "rendezvous and abort (pytorch/xla issues 5005 and 9089)"
)


class XLAStrategy(XLAStrategyBase):
    """A replica per XLA device, started by ``fabric.launch(fn)`` through ``torch_xla.launch``.

    Each replica runs the whole training function on its own device and its own shard of the data.
    Gradients are averaged over replicas (``xm.reduce_gradients``) right before each optimizer step,
    so gradient accumulation needs no special context: ``no_backward_sync`` costs nothing here.
    Ranks come from the XLA runtime once the replica runs (on TPU v2/v3 and on the CPU device one
    process drives several devices from threads, so ranks are per thread, never cached).

    Args:
        start_method: how ``torch_xla.launch`` starts processes (``"fork"`` works in notebooks;
            ``"spawn"`` needs the training function to be importable).
        allow_cpu_multiprocess: run several replicas on PJRT_DEVICE=CPU despite the upstream hang in
            collectives (launching, ranks and data sharding work; any collective does not).
    """

    name = "xla"
    is_distributed = True
    supports_no_backward_sync = True

    def __init__(self, start_method: str = "fork", allow_cpu_multiprocess: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if start_method not in ("fork", "spawn", "forkserver"):
            raise MisconfigurationError(
                f"start_method={start_method!r} is not valid; choose 'fork', 'spawn' or 'forkserver'."
            )
        self._start_method = start_method
        self._allow_cpu_multiprocess = allow_cpu_multiprocess
        self._in_replica = False
        # (thread, optimizer) pairs whose gradients were already reduced this step (by clip_gradients);
        # on TPU v2/v3 and the CPU device one process drives several replicas from threads.
        self._reduced: set[tuple[int, int]] = set()

    # ----------------------------------------------------------------- topology
    @property
    def num_processes(self) -> int:
        """Replicas on this host (devices, not OS processes: one process may drive several devices)."""
        return len(self.parallel_devices) if self.parallel_devices else 1

    @property
    def root_device(self) -> torch.device:
        if self._in_replica:
            import torch_xla

            return torch_xla.device()
        return self.parallel_devices[0] if self.parallel_devices else torch.device("xla", 0)

    @property
    def global_rank(self) -> int:
        if not self._in_replica:
            return 0
        import torch_xla.runtime as xr

        return xr.global_ordinal()

    @property
    def local_rank(self) -> int:
        if not self._in_replica:
            return 0
        import torch_xla.runtime as xr

        return xr.local_ordinal()

    @property
    def node_rank(self) -> int:
        if not self._in_replica:
            return 0
        import torch_xla.runtime as xr

        return xr.host_index()

    @property
    def world_size(self) -> int:
        if not self._in_replica:
            return self.num_processes * self.num_nodes
        import torch_xla.runtime as xr

        return xr.world_size()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    # ---------------------------------------------------------------- lifecycle
    def validate(self) -> None:
        self._validate_devices()
        super().validate()

    def configure_launcher(self) -> None:
        from fabric_xla.launcher import XLALauncher

        self._launcher = XLALauncher(self, start_method=self._start_method)

    def _validate_devices(self) -> None:
        count = self.num_processes
        available = probe.local_device_count()
        if count > 1 and available and count != available:
            raise MisconfigurationError(
                f"strategy {self.name!r} runs a replica on every XLA device of the host ({available}); torch_xla cannot "
                f"start a subset, but devices asks for {count}. Use devices='auto' (or {available}), or devices=1."
            )
        if count > 1 and probe.pjrt_device() == "CPU" and not self._allow_cpu_multiprocess:
            raise MisconfigurationError(
                f"{CPU_COLLECTIVES_BUG}. For several CPU devices use strategy='xla_spmd' (one process drives all "
                f"devices), or devices=1; strategy {self.name!r} is for TPUs."
            )

    def setup_environment(self) -> None:
        super().setup_environment()
        self._in_replica = True

    # ------------------------------------------------------------------- set-up
    def setup_module(self, module: Module) -> Module:
        """Give every replica rank 0's parameters, as DDP does at construction."""
        if self.world_size > 1:
            import torch_xla.core.xla_model as xm

            xm.broadcast_master_param(module)
        return module

    # ------------------------------------------------------------------ training
    def _fresh_runtime_state(self) -> dict[str, Any]:
        return {**super()._fresh_runtime_state(), "_reduced": set(), "_in_replica": False}

    def _reduce_gradients(self, optimizer: Optimizer) -> None:
        key = (threading.get_ident(), id(optimizer))
        if key in self._reduced:
            return
        import torch_xla.core.xla_model as xm

        xm.reduce_gradients(optimizer)
        self._reduced.add(key)

    def _before_step(self, optimizer: Optimizer, recomputed: bool = False) -> None:
        if recomputed:
            self._reduced.discard((threading.get_ident(), id(optimizer)))
        self._reduce_gradients(optimizer)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        try:
            return super().optimizer_step(optimizer, **kwargs)
        finally:
            self._reduced.discard((threading.get_ident(), id(optimizer)))

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor:
        """Clip the averaged gradients (every replica then clips the same values)."""
        self._reduce_gradients(optimizer)
        return super().clip_gradients_norm(module, optimizer, max_norm, norm_type, error_if_nonfinite)

    def clip_gradients_value(self, module: Module, optimizer: Optimizer, clip_val: float) -> None:
        self._reduce_gradients(optimizer)
        super().clip_gradients_value(module, optimizer, clip_val)

    # --------------------------------------------------------------- collectives
    def all_reduce(self, tensor: Tensor, group: Any = None, reduce_op: str = "mean") -> Tensor:
        _no_groups(group)
        return collectives.all_reduce(tensor, self.root_device, self.world_size, reduce_op)

    def all_gather(self, tensor: Tensor, group: Any = None, sync_grads: bool = False) -> Tensor:
        _no_groups(group)
        return collectives.all_gather(tensor, self.root_device, sync_grads)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if self.world_size == 1:
            return obj
        return collectives.broadcast(obj, src, self.root_device, self.global_rank)

    def barrier(self, name: str | None = None) -> None:
        if self._in_replica and self.world_size > 1:
            collectives.barrier(name)


def _no_groups(group: Any) -> None:
    if group is not None:
        raise MisconfigurationError(
            "XLA strategies reduce over all replicas; process groups (group=...) are not supported."
        )
