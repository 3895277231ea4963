"""Fully sharded data parallel on PyTorch's FSDP2 (``fully_shard``): parameters, gradients and
optimizer state are split across processes; works on CPU with gloo and on GPUs with NCCL."""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.errors import MisconfigurationError
from fabric_core.strategies import fsdp_options as options
from fabric_core.strategies.process_group import ProcessGroupStrategy

_STATE_DICT_TYPES = ("sharded", "full")


class _HybridShardError(MisconfigurationError, RuntimeError):
    """Hybrid sharding without a mesh; a ``RuntimeError`` too, as Lightning raises."""


class FSDPStrategy(ProcessGroupStrategy):
    """Shards the model with ``torch.distributed.fsdp.fully_shard`` (FSDP2).

    Takes Lightning's (FSDP1-era) arguments and maps them onto FSDP2; see ``fsdp_options``.

    Args:
        auto_wrap_policy: which submodules are sharded as their own unit: module classes
            (``{TransformerBlock}``), ``fn(module) -> bool``, an FSDP1 policy such as
            ``functools.partial(size_based_auto_wrap_policy, min_num_params=...)``, or a
            ``ModuleWrapPolicy``. The root is always sharded.
        sharding_strategy: ``"FULL_SHARD"`` (default), ``"SHARD_GRAD_OP"`` (parameters stay gathered
            between forward and backward), ``"NO_SHARD"`` (replicated, gradients all-reduced),
            ``"HYBRID_SHARD"`` / ``"_HYBRID_SHARD_ZERO2"`` (sharded within a group, replicated across
            groups, on a 2D mesh), as strings or ``torch.distributed.fsdp.ShardingStrategy``.
        device_mesh: ``(replicas, shards)`` or a ``DeviceMesh``; default one dimension over all
            processes, or ``(num_nodes, devices per node)`` for the hybrid strategies.
        reshard_after_forward: overrides what the sharding strategy implies.
        cpu_offload: keep sharded parameters, gradients and the optimizer step in CPU memory
            (``True``, ``CPUOffload(offload_params=True)`` or ``CPUOffloadPolicy``).
        mixed_precision: ``torch.distributed.fsdp.MixedPrecision`` (its floating buffers are cast to
            ``buffer_dtype`` once, at setup) or FSDP2's ``MixedPrecisionPolicy``.
        state_dict_type: ``"sharded"`` (a folder of per-rank shards via ``torch.distributed.checkpoint``,
            loadable on any number of processes) or ``"full"`` (one ``torch.save`` file written by rank 0).
        activation_checkpointing_policy: submodules whose forward is recomputed in backward (same
            forms as ``auto_wrap_policy``); ``activation_checkpointing`` is the older class-list form.
        **kwargs: FSDP1 keywords: ``sync_module_states`` (broadcast rank 0's weights before sharding),
            ``ignored_modules`` (left unsharded), ``param_init_fn`` (materialises meta-device modules);
            ``use_orig_params``, ``limit_all_gathers``, ``forward_prefetch``, ``backward_prefetch``,
            ``device_id`` are accepted (FSDP2 behaves that way already); ``process_group`` is refused.
    """

    name = "fsdp"
    supports_no_backward_sync = True

    def __init__(
        self,
        accelerator: Any = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: Any = None,
        precision: Any = None,
        process_group_backend: str | None = None,
        timeout: Any = None,
        cpu_offload: Any = None,
        mixed_precision: Any = None,
        auto_wrap_policy: Any = None,
        activation_checkpointing: Any = None,
        activation_checkpointing_policy: Any = None,
        sharding_strategy: Any = "FULL_SHARD",
        state_dict_type: str = "sharded",
        device_mesh: Any = None,
        reshard_after_forward: bool | None = None,
        start_method: str = "popen",
        checkpoint_io: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            start_method=start_method,
            process_group_backend=process_group_backend,
            timeout=timeout,
            accelerator=accelerator,
            precision=precision,
            checkpoint_io=checkpoint_io,
            cluster_environment=cluster_environment,
            parallel_devices=parallel_devices,
        )
        if state_dict_type not in _STATE_DICT_TYPES:
            raise MisconfigurationError(
                f"state_dict_type={state_dict_type!r} is not valid; choose 'sharded' or 'full'."
            )
        self.sharding_strategy = options.sharding_strategy(sharding_strategy)
        hybrid = "HYBRID" in self.sharding_strategy.name
        if hybrid and auto_wrap_policy is None and device_mesh is None:
            raise _HybridShardError(
                "The hybrid sharding strategy requires you to pass at least one of the parameters: "
                f"`device_mesh=(replicas, shards)` (or a DeviceMesh), or `auto_wrap_policy` (the mesh is then "
                f"(num_nodes, devices per node)). Got sharding_strategy={self.sharding_strategy.name!r}."
            )
        if device_mesh is not None and not _is_mesh_like(device_mesh):
            raise MisconfigurationError(
                f"device_mesh takes a tuple of ints such as (2, 4) (replicas, shards) or a DeviceMesh; got {device_mesh!r}."
            )
        self.device_mesh = device_mesh
        self.auto_wrap_policy = options.module_policy(auto_wrap_policy, "auto_wrap_policy")
        self.activation_checkpointing_policy = options.checkpointing_policy(
            activation_checkpointing, activation_checkpointing_policy
        )
        if reshard_after_forward is None:
            reshard_after_forward = self.sharding_strategy.name in ("FULL_SHARD", "HYBRID_SHARD")
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = options.cpu_offload(cpu_offload)
        self.mixed_precision = mixed_precision
        self._mp_policy, self._buffer_dtype = options.mixed_precision_policy(mixed_precision)
        self._fsdp1 = options.fsdp1_keywords(kwargs)
        self.state_dict_type = state_dict_type
        self._mesh: Any = None

    @property
    def mixed_precision_config(self) -> Any:
        """The ``mixed_precision`` given to the constructor (FSDP1 ``MixedPrecision`` or FSDP2 policy), or ``None``."""
        return self.mixed_precision

    # ----------------------------------------------------------------- set-up
    def _device_mesh(self) -> Any:
        if self._mesh is None:
            self._mesh = self._build_mesh()
        return self._mesh

    def _build_mesh(self) -> Any:
        """1D over all processes; 2D ``(replicate, shard)`` for hybrid sharding, NO_SHARD or a 2D ``device_mesh``."""
        from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

        if isinstance(self.device_mesh, DeviceMesh):
            return self.device_mesh
        device_type = self.root_device.type
        if self.device_mesh is not None:
            shape = tuple(self.device_mesh)
        elif "HYBRID" in self.sharding_strategy.name:
            shape = (self.num_nodes, self.world_size // self.num_nodes)
        elif self.sharding_strategy.name == "NO_SHARD":
            shape = (self.world_size, 1)
        else:
            shape = (self.world_size,)
        if math.prod(shape) != self.world_size:
            raise MisconfigurationError(
                f"device_mesh={shape} holds {math.prod(shape)} processes, but this job has {self.world_size}."
            )
        if len(shape) == 1:
            return init_device_mesh(device_type, shape)
        if len(shape) != 2:
            raise MisconfigurationError(f"device_mesh takes one or two dimensions (replicas, shards), got {shape}.")
        return init_device_mesh(device_type, shape, mesh_dim_names=("replicate", "shard"))

    def module_to_device(self, module: Module) -> None:
        if not any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            module.to(self.root_device)

    def setup_module(self, module: Module) -> Module:
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        if self._fsdp1.sync_module_states:
            self._broadcast_from_rank_zero(module)
        if self._buffer_dtype is not None:
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    buffer.data = buffer.data.to(self._buffer_dtype)
        if self.activation_checkpointing_policy is not None:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            apply_activation_checkpointing(module, check_fn=self.activation_checkpointing_policy)
        options_: dict[str, Any] = {"mesh": self._device_mesh(), "reshard_after_forward": self.reshard_after_forward}
        if self.cpu_offload.offload_params:
            options_["offload_policy"] = CPUOffloadPolicy(pin_memory=self.root_device.type != "cpu")
        if self._mp_policy is not None:
            options_["mp_policy"] = self._mp_policy
        ignored = {p for m in self._fsdp1.ignored_modules for p in m.parameters()}
        if ignored:
            options_["ignored_params"] = ignored
        if self.auto_wrap_policy is not None:
            for submodule in reversed(list(module.modules())):  # innermost first
                if submodule is not module and self.auto_wrap_policy(submodule):
                    if any(p in ignored for p in submodule.parameters()):
                        continue
                    fully_shard(submodule, **options_)
        fully_shard(module, **options_)
        if any(p.is_meta for p in module.parameters()):
            module.to_empty(device="cpu" if self.cpu_offload.offload_params else self.root_device)
            init_fn = self._fsdp1.param_init_fn
            for submodule in module.modules():
                if init_fn is not None:
                    init_fn(submodule)
                    continue
                reset = getattr(submodule, "reset_parameters", None)
                if callable(reset):
                    reset()
        return module

    def _broadcast_from_rank_zero(self, module: Module) -> None:
        """FSDP1's ``sync_module_states``: every rank starts from rank 0's weights and buffers."""
        import torch.distributed as dist

        if self.world_size < 2:
            return
        with torch.no_grad():
            for tensor in (*module.parameters(), *module.buffers()):
                if not tensor.is_meta:
                    dist.broadcast(tensor.data, src=0)

    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer], scheduler: Any = None
    ) -> tuple[Module, list[Optimizer], Any]:
        """Shard, then point the optimizers at the sharded parameters (matched by name)."""
        names = {id(p): n for n, p in module.named_parameters()}
        for optimizer in optimizers:
            if optimizer.state:
                raise MisconfigurationError(
                    "FSDP replaces the model's parameters when sharding; an optimizer that already has state cannot be "
                    "moved over. Call fabric.setup before the first optimizer step."
                )
            for group in optimizer.param_groups:
                if any(id(p) not in names for p in group["params"]):
                    raise MisconfigurationError(
                        "An optimizer passed to fabric.setup holds parameters that are not in the module."
                    )
        module = self.setup_module(module)
        sharded = dict(module.named_parameters())
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["params"] = [sharded[names[id(p)]] for p in group["params"]]
        return module, optimizers, scheduler

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager:
        """``empty_init=True`` creates the model on the meta device: no memory until it is sharded."""
        if not empty_init:
            return super().module_init_context(empty_init)
        stack = ExitStack()
        stack.enter_context(torch.device("meta"))
        stack.enter_context(self.precision.module_init_context())
        return stack

    @contextmanager
    def _sync_disabled(self, module: Module) -> Any:
        from torch.distributed.fsdp import FSDPModule

        fsdp_modules = [m for m in module.modules() if isinstance(m, FSDPModule)]
        for m in fsdp_modules:
            m.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for m in fsdp_modules:
                m.set_requires_gradient_sync(True, recurse=False)

    def no_backward_sync(self, module: Module, enabled: bool) -> AbstractContextManager:
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
        norm = super().clip_gradients_norm(module, optimizer, max_norm, norm_type, error_if_nonfinite)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    # ------------------------------------------------------------- checkpoints
    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: Any = None,
        async_: bool = False,
    ) -> Any:
        if self.state_dict_type == "full":
            from fabric_core.strategies.fsdp_checkpoint import full_state

            return self._write_from_rank_zero(full_state(self, state, filter), path, storage_options, async_)
        from fabric_core.strategies.fsdp_checkpoint import save_sharded

        return save_sharded(self, path, state, filter, storage_options=storage_options, async_=async_)

    def load_checkpoint(
        self,
        path: str | Path,
        state: Any = None,
        strict: bool = True,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        from fabric_core.strategies.fsdp_checkpoint import load_checkpoint

        return load_checkpoint(self, path, state, strict, weights_only, verify=verify, storage_options=storage_options)


def _is_mesh_like(value: Any) -> bool:
    from torch.distributed.device_mesh import DeviceMesh

    if isinstance(value, DeviceMesh):
        return True
    return (
        isinstance(value, (tuple, list))
        and 1 <= len(value) <= 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    )
