"""Shared base of the strategies built on ``torch.distributed`` process groups (DDP, FSDP, DeepSpeed)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.strategy import Strategy
from fabric_core.strategies.process_group_lease import DefaultGroupLease, lease_default_group

DEFAULT_TIMEOUT = timedelta(minutes=30)
TIMEOUT_ENV = "FABRIC_COLLECTIVE_TIMEOUT"
_START_METHODS = ("popen", "spawn", "fork", "forkserver")
_REDUCE = {"sum": "SUM", "max": "MAX", "min": "MIN", "mean": "SUM"}


def resolve_timeout(timeout: Any) -> timedelta:
    """Turn ``timeout`` (timedelta, seconds, or None for FABRIC_COLLECTIVE_TIMEOUT / 30 min) into a timedelta."""
    if timeout is None:
        env = os.environ.get(TIMEOUT_ENV)
        return timedelta(seconds=float(env)) if env else DEFAULT_TIMEOUT
    if isinstance(timeout, timedelta):
        return timeout
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return timedelta(seconds=timeout)
    raise MisconfigurationError(f"timeout must be a positive number of seconds or a timedelta, got {timeout!r}.")


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, tensor, group=group)
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


class ProcessGroupStrategy(Strategy):
    """One process per device, joined in a ``torch.distributed`` process group.

    Args:
        start_method: how Fabric starts the processes when no scheduler did: ``"popen"`` re-runs the
            script (``fabric.launch()`` may be called without a function), ``"spawn"``/``"fork"``/
            ``"forkserver"`` run ``fabric.launch(fn)`` in new processes.
        process_group_backend: ``"gloo"``, ``"nccl"`` ...; default: what the accelerator prefers.
        timeout: how long a collective may wait before the job fails (seconds or timedelta;
            env ``FABRIC_COLLECTIVE_TIMEOUT``; default 30 minutes).
    """

    is_distributed = True

    def __init__(
        self,
        start_method: str = "popen",
        process_group_backend: str | None = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if start_method not in _START_METHODS:
            raise MisconfigurationError(
                f"start_method={start_method!r} is not valid; choose one of {', '.join(_START_METHODS)}."
            )
        self.start_method = start_method
        self._process_group_backend = process_group_backend
        self.timeout = resolve_timeout(timeout)
        self._local_rank = 0
        self._store: Any = None  # a TCPStore handed over by the launcher (collision-free ports)
        self._group_lease: DefaultGroupLease | None = None  # this strategy's use of the default group

    # ----------------------------------------------------------------- topology
    @property
    def num_processes(self) -> int:
        return len(self.parallel_devices) if self.parallel_devices else 1

    @property
    def root_device(self) -> torch.device:
        assert self.parallel_devices, "plan resolution sets parallel_devices"
        return self.parallel_devices[self.local_rank]

    @property
    def world_size(self) -> int:
        env = self.cluster_environment
        if env is not None and env.creates_processes_externally:
            return env.world_size()
        return self.num_processes * self.num_nodes

    @property
    def global_rank(self) -> int:
        env = self.cluster_environment
        if env is not None and env.creates_processes_externally:
            return env.global_rank()
        return self.node_rank * self.num_processes + self.local_rank

    @property
    def local_rank(self) -> int:
        env = self.cluster_environment
        if env is not None and env.creates_processes_externally:
            return env.local_rank()
        return self._local_rank

    def set_local_rank(self, rank: int) -> None:
        """Called by launchers in each worker they start."""
        self._local_rank = rank

    @property
    def node_rank(self) -> int:
        env = self.cluster_environment
        return env.node_rank() if env is not None else 0

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    @property
    def process_group_backend(self) -> str:
        if self._process_group_backend:
            return self._process_group_backend
        return self.accelerator.default_process_group_backend() if self.accelerator is not None else "gloo"

    def configure_launcher(self) -> None:
        env = self.cluster_environment
        if env is not None and env.creates_processes_externally:
            self._launcher = None
            return
        if self.start_method == "popen":
            from fabric_core.launchers.subprocess_script import SubprocessScriptLauncher

            self._launcher = SubprocessScriptLauncher(self)
        else:
            from fabric_core.launchers.multiprocessing import MultiprocessingLauncher

            self._launcher = MultiprocessingLauncher(self, start_method=self.start_method)

    # ---------------------------------------------------------------- lifecycle
    def setup_environment(self) -> None:
        super().setup_environment()
        self._init_process_group()

    def _init_process_group(self) -> None:
        """Join the default process group: the one that exists (checked against this job), or a new one."""
        if not dist.is_available():
            raise RuntimeError("This torch build has no torch.distributed support.")
        if self._group_lease is not None:
            return
        if dist.is_initialized():
            self._check_existing_group()
        self._group_lease = lease_default_group(self._create_process_group, rank=self.global_rank)

    def _check_existing_group(self) -> None:
        """A default group created before Fabric is used as is, but only if it is this job's."""
        found = (dist.get_rank(), dist.get_world_size())
        if found != (self.global_rank, self.world_size):
            raise MisconfigurationError(
                f"torch.distributed is already initialized with rank {found[0]} of world size {found[1]}, but this "
                f"Fabric runs as rank {self.global_rank} of {self.world_size}. Create Fabric with the devices and "
                "num_nodes of that group, or destroy it first (torch.distributed.destroy_process_group())."
            )

    def _create_process_group(self) -> None:
        env = self.cluster_environment
        assert env is not None
        env.set_world_size(self.world_size)
        env.set_global_rank(self.global_rank)
        kwargs: dict[str, Any] = {"backend": self.process_group_backend, "timeout": self.timeout}
        if self.root_device.type == "cuda":
            kwargs["device_id"] = self.root_device
        if self._store is not None:
            store = self._store
        elif env.creates_processes_externally and "TORCHELASTIC_RUN_ID" in os.environ:
            # torchrun's agent owns the store; env:// connects to it. If the agent is killed, its
            # workers must not train on (or wait in a collective) without a supervisor.
            from fabric_core.launchers.subprocess_script import die_with_parent

            die_with_parent()
            dist.init_process_group(init_method="env://", rank=self.global_rank, world_size=self.world_size, **kwargs)
            return
        else:
            store = dist.TCPStore(
                env.main_address,
                env.main_port,
                self.world_size,
                is_master=self.global_rank == 0,
                timeout=self.timeout,
                wait_for_workers=False,
            )
        dist.init_process_group(store=store, rank=self.global_rank, world_size=self.world_size, **kwargs)

    def teardown(self) -> None:
        """Give back this strategy's use of the default group: destroyed only by the last Fabric, if Fabric made it."""
        self.checkpoint_io.wait_for_saves()  # background saves of sharded folders still talk to the other ranks
        lease, self._group_lease = self._group_lease, None
        if lease is not None:
            lease.release()
        self._store = None
        super().teardown()

    # --------------------------------------------------------------- collectives
    def all_reduce(self, tensor: torch.Tensor, group: Any = None, reduce_op: str = "mean") -> torch.Tensor:
        if not dist.is_initialized():
            return tensor
        result = tensor.clone()
        is_mean = reduce_op == "mean"
        if is_mean and not torch.is_floating_point(result):
            result = result.to(torch.get_default_dtype())
        dist.all_reduce(result, op=getattr(dist.ReduceOp, _REDUCE[reduce_op]), group=group)
        if is_mean:
            result = result / dist.get_world_size(group)
        return result

    def all_gather(self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
        if not dist.is_initialized():
            return tensor  # one process, no group: unchanged, as in Lightning
        tensor = tensor.contiguous()
        if sync_grads:
            return _AllGatherWithGrad.apply(tensor, group)
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, tensor, group=group)
        return torch.stack(gathered)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not dist.is_initialized():
            return obj
        payload = [obj]
        device = self.root_device if self.process_group_backend == "nccl" else None
        dist.broadcast_object_list(payload, src=src, device=device)
        return payload[0]

    def barrier(self, name: str | None = None) -> None:
        if not dist.is_initialized():
            return
        if self.process_group_backend == "nccl":
            dist.barrier(device_ids=[self.root_device.index])
        else:
            dist.barrier()
