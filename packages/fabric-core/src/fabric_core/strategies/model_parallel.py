"""User-defined parallelism on a ``DeviceMesh``: tensor parallel, FSDP2 x TP (2-D), HSDP x TP (3-D).

The strategy owns the process group, the mesh and checkpoints; the user's ``parallelize_fn(model,
device_mesh)`` decides the plan with torch's own ``parallelize_module`` and ``fully_shard``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.strategy import Strategy
from fabric_core.strategies.mesh_config import HSDP_NAMES, TWO_D_NAMES, MeshConfig, Size, check_size, resolve_two_d
from fabric_core.strategies.process_group import ProcessGroupStrategy

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future

    from torch.distributed.device_mesh import DeviceMesh

# Prefixes that wrappers applied inside a parallelize_fn add to parameter names.
_WRAPPER_PREFIXES = re.compile(r"(_checkpoint_wrapped_module\.|_orig_mod\.|_fsdp_wrapped_module\.)")


class ModelParallelStrategy(ProcessGroupStrategy):
    """Applies ``parallelize_fn(model, device_mesh)`` to the model in ``fabric.setup``.

    Args:
        parallelize_fn: takes the model and the ``DeviceMesh``, applies tensor parallelism
            (``parallelize_module``) and/or FSDP2 (``fully_shard``) and returns the model.
        data_parallel_size: size of the ``data_parallel`` mesh dimension; ``"auto"``: the number of
            nodes (or world size / ``tensor_parallel_size`` when that one is given).
        tensor_parallel_size: size of the ``tensor_parallel`` mesh dimension; ``"auto"``: the devices of
            one node (or world size / ``data_parallel_size`` when that one is given).
        save_distributed_checkpoint: ``True``: ``fabric.save`` writes a folder in which each rank writes
            its shards (``torch.distributed.checkpoint``); ``False``: one full file written by rank 0.
        process_group_backend: ``"gloo"``, ``"nccl"`` ...; default: what the accelerator prefers.
        timeout: how long a collective may wait (seconds or timedelta; default 30 minutes).
        mesh: a ``MeshConfig`` for HSDP x TP (replaces the two sizes): the mesh gets the dimensions
            ``data_parallel_replicate``, ``data_parallel_shard``, ``tensor_parallel`` and the flattened
            ``data_parallel``.
        start_method: how Fabric starts the processes (``"popen"`` re-runs the script, ``"spawn"``...).
    """

    name = "model_parallel"
    supports_no_backward_sync = True

    def __init__(
        self,
        parallelize_fn: Callable[[Module, DeviceMesh], Module],
        data_parallel_size: Size = "auto",
        tensor_parallel_size: Size = "auto",
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: Any = None,
        *,
        mesh: MeshConfig | None = None,
        start_method: str = "popen",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            start_method=start_method, process_group_backend=process_group_backend, timeout=timeout, **kwargs
        )
        if not callable(parallelize_fn):
            raise MisconfigurationError(
                f"parallelize_fn must be a function (model, device_mesh) -> model, got {parallelize_fn!r}."
            )
        if mesh is not None:
            if not isinstance(mesh, MeshConfig):
                raise MisconfigurationError(f"mesh must be a fabric_core.strategies.MeshConfig, got {mesh!r}.")
            if (data_parallel_size, tensor_parallel_size) != ("auto", "auto"):
                raise MisconfigurationError(
                    "Pass either data_parallel_size/tensor_parallel_size or mesh=MeshConfig(...), not both."
                )
        else:
            check_size("data_parallel_size", data_parallel_size)
            check_size("tensor_parallel_size", tensor_parallel_size)
        self._parallelize_fn = parallelize_fn
        self._data_parallel_size = data_parallel_size
        self._tensor_parallel_size = tensor_parallel_size
        self._mesh_config = mesh
        self._save_distributed_checkpoint = bool(save_distributed_checkpoint)
        self._mesh_shape: tuple[int, ...] | None = None
        self._device_mesh: DeviceMesh | None = None

    # ----------------------------------------------------------------- the mesh
    @property
    def mesh_dim_names(self) -> tuple[str, ...]:
        return HSDP_NAMES if self._mesh_config is not None else TWO_D_NAMES

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        """The sizes of the mesh dimensions, checked against the world size."""
        if self._mesh_shape is None:
            if self._mesh_config is not None:
                self._mesh_shape = self._mesh_config.resolve(self.world_size)
            else:
                self._mesh_shape = resolve_two_d(
                    self._data_parallel_size,
                    self._tensor_parallel_size,
                    self.num_nodes,
                    self.num_processes,
                    self.world_size,
                )
        return self._mesh_shape

    @property
    def device_mesh(self) -> DeviceMesh:
        """The mesh handed to ``parallelize_fn`` (dimensions named as in ``mesh_dim_names``)."""
        if self._device_mesh is None:
            raise RuntimeError("The device mesh exists once the processes have started: call fabric.launch() first.")
        return self._device_mesh

    def configure_launcher(self) -> None:
        self._mesh_shape = None  # plan resolution may have changed the devices since the last call
        _ = self.mesh_shape  # an impossible shape fails here, before any process is started
        super().configure_launcher()

    def setup_environment(self) -> None:
        super().setup_environment()
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(self.root_device.type, self.mesh_shape, mesh_dim_names=self.mesh_dim_names)
        if self._mesh_config is not None:
            mesh["data_parallel_replicate", "data_parallel_shard"]._flatten("data_parallel")
        self._device_mesh = mesh

    def teardown(self) -> None:
        self._device_mesh = None
        super().teardown()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Data is split over the data-parallel dimension; tensor-parallel peers see the same batch."""
        data_parallel = self.device_mesh["data_parallel"]
        return {"num_replicas": data_parallel.size(), "rank": data_parallel.get_local_rank()}

    # ------------------------------------------------------------------- set-up
    def module_to_device(self, module: Module) -> None:
        """Nothing: ``parallelize_fn`` places each shard; the rest moves after it ran."""

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager:
        """``empty_init=True`` creates the model on the meta device; it is materialized, already
        sharded, in ``fabric.setup`` (no rank ever holds the full model)."""
        stack = ExitStack()
        if empty_init:
            stack.enter_context(torch.device("meta"))
        stack.enter_context(self.precision.module_init_context())
        return stack

    def setup_module(self, module: Module) -> Module:
        parallelized = self._parallelize_fn(module, self.device_mesh)
        if not isinstance(parallelized, Module):
            raise TypeError(f"parallelize_fn must return the nn.Module, got {type(parallelized).__name__}.")
        _materialize(parallelized, self.root_device)
        _move_plain_tensors(parallelized, self.root_device)
        return parallelized

    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer], scheduler: Any = None
    ) -> tuple[Module, list[Optimizer], Any]:
        """Parallelize, then point the optimizers at the new (DTensor) parameters, matched by name."""
        names = {id(p): _plain_name(n) for n, p in module.named_parameters()}
        for optimizer in optimizers:
            if optimizer.state:
                raise MisconfigurationError(
                    "parallelize_fn replaces the model's parameters; an optimizer that already has state cannot be "
                    "moved over. Call fabric.setup before the first optimizer step."
                )
            if any(id(p) not in names for g in optimizer.param_groups for p in g["params"]):
                raise MisconfigurationError(
                    "An optimizer passed to fabric.setup holds parameters that are not in the module."
                )
        module = self.setup_module(module)
        parallel = {_plain_name(n): p for n, p in module.named_parameters()}
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                try:
                    group["params"] = [parallel[names[id(p)]] for p in group["params"]]
                except KeyError as missing:
                    raise MisconfigurationError(
                        f"parallelize_fn removed or renamed the parameter {missing}; create the optimizer after "
                        "fabric.setup_module(model) from model.parameters() instead."
                    ) from None
        return module, optimizers, scheduler

    # ----------------------------------------------------------------- training
    @contextmanager
    def _sync_disabled(self, module: Module) -> Iterator[None]:
        from torch.distributed.fsdp import FSDPModule

        sharded = [m for m in module.modules() if isinstance(m, FSDPModule)]
        for m in sharded:
            m.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for m in sharded:
                m.set_requires_gradient_sync(True, recurse=False)

    def no_backward_sync(self, module: Module, enabled: bool) -> AbstractContextManager:
        """Skips the data-parallel gradient reduction of the ``fully_shard`` modules (tensor-parallel
        communication is part of the computation and always runs)."""
        if not enabled:
            return super().no_backward_sync(module, enabled)
        return self._sync_disabled(module)

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Clips by the norm of the whole model, however its parameters are spread over the mesh."""
        from fabric_core.strategies.mesh_gradients import clip_by_norm

        self.precision.unscale_gradients(optimizer)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        return clip_by_norm(grads, max_norm, norm_type, error_if_nonfinite)

    # -------------------------------------------------------------- collectives
    def all_reduce(self, tensor: torch.Tensor, group: Any = None, reduce_op: str = "mean") -> torch.Tensor:
        """``group`` may also be a 1-D mesh, e.g. ``fabric.strategy.device_mesh["data_parallel"]``."""
        return super().all_reduce(tensor, group=_process_group(group), reduce_op=reduce_op)

    def all_gather(self, tensor: torch.Tensor, group: Any = None, sync_grads: bool = False) -> torch.Tensor:
        return super().all_gather(tensor, group=_process_group(group), sync_grads=sync_grads)

    # ------------------------------------------------------------- checkpoints
    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_module_state_dict(self, module: Module, state_dict: Any, strict: bool = True) -> None:
        """Loads a full (unsharded) state dict; each rank keeps its own shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, dict(state_dict), options=StateDictOptions(full_state_dict=True, strict=strict))

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        async_: bool = False,
    ) -> Future | None:
        """A folder in which each rank writes its shards (``save_distributed_checkpoint=True``) or one
        full file written by rank 0; either is swapped in atomically, as with FSDP."""
        from fabric_core.strategies import fsdp_checkpoint

        path = self.broadcast(path)  # every rank writes into rank 0's folder (Lightning does the same)
        if self._save_distributed_checkpoint:
            return fsdp_checkpoint.save_sharded(
                self,  # type: ignore[arg-type]
                path,
                state,
                filter,
                storage_options=storage_options,
                async_=async_,
            )
        converted = fsdp_checkpoint.full_state(self, state, filter)  # type: ignore[arg-type]
        return self._write_from_rank_zero(converted, path, storage_options, async_)

    def load_checkpoint(
        self,
        path: str | Path,
        state: Any = None,
        strict: bool = True,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        """Loads either kind of checkpoint on any mesh shape, resharding as needed."""
        from fabric_core.strategies.fsdp_checkpoint import load_checkpoint

        return load_checkpoint(self, path, state, strict, weights_only, verify=verify, storage_options=storage_options)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shape = "x".join(map(str, self._mesh_shape)) if self._mesh_shape else "unresolved"
        return f"ModelParallelStrategy(mesh={shape} {self.mesh_dim_names}, precision={self.precision!r})"


def _plain_name(name: str) -> str:
    return _WRAPPER_PREFIXES.sub("", name)


def _process_group(group: Any) -> Any:
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(group, DeviceMesh):
        if group.ndim != 1:
            raise ValueError(
                f"A collective needs a 1-D mesh (one dimension, e.g. mesh['data_parallel']), got {group.ndim} "
                f"dimensions {group.mesh_dim_names}."
            )
        return group.get_group()
    return group


def _has_meta(module: Module) -> bool:
    return any(t.is_meta for t in (*module.parameters(), *module.buffers()))


def _materialize(module: Module, device: torch.device) -> None:
    """Allocate the (already sharded) meta tensors on ``device`` and initialize them with
    ``reset_parameters``; modules without one are named in a warning."""
    if not _has_meta(module):
        return
    module.to_empty(device=device)
    uninitialized = set()
    for submodule in module.modules():
        if not any(True for _ in (*submodule.parameters(recurse=False), *submodule.buffers(recurse=False))):
            continue
        reset = getattr(submodule, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            uninitialized.add(type(submodule).__name__)
    if uninitialized:
        warnings.warn(
            f"Modules {sorted(uninitialized)} were created on the meta device and have no reset_parameters(); "
            "their values are uninitialized memory until you load a checkpoint into them.",
            stacklevel=3,
        )


def _move_plain_tensors(module: Module, device: torch.device) -> None:
    """Move what ``parallelize_fn`` left alone (plain tensors) to ``device``; DTensors are placed already."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        for submodule in module.modules():
            for param in submodule.parameters(recurse=False):
                if not isinstance(param, DTensor) and param.device != device:
                    param.data = param.data.to(device)
            for name, buffer in submodule.named_buffers(recurse=False):
                if not isinstance(buffer, DTensor) and buffer.device != device:
                    submodule._buffers[name] = buffer.to(device)


def from_name() -> Strategy:
    """What ``strategy="model_parallel"`` resolves to: the name alone cannot carry the user's plan."""
    raise MisconfigurationError(
        "strategy='model_parallel' needs your parallelize_fn: pass an instance, "
        "Fabric(strategy=ModelParallelStrategy(parallelize_fn=my_fn)) with "
        "`from fabric_core.strategies import ModelParallelStrategy`."
    )
