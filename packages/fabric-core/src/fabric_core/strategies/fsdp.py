"""Fully sharded data parallel on PyTorch's FSDP2 (``fully_shard``): parameters, gradients and
optimizer state are split across processes; works on CPU with gloo and on GPUs with NCCL."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.errors import MisconfigurationError
from fabric_core.strategies.process_group import ProcessGroupStrategy

_STATE_DICT_TYPES = ("sharded", "full")


class _ClassPolicy:
    """Picks submodules by class; a plain object so the strategy pickles for spawned processes."""

    def __init__(self, classes: tuple[type[Module], ...]) -> None:
        self.classes = classes

    def __call__(self, module: Module) -> bool:
        return isinstance(module, self.classes)


def _policy(policy: Any) -> Callable[[Module], bool] | None:
    """Turn ``{Block, Layer}`` or a predicate into a predicate saying which submodules to shard on their own."""
    if policy is None or (callable(policy) and not isinstance(policy, type)):
        return policy
    classes = tuple(policy) if isinstance(policy, Iterable) else (policy,)
    if not all(isinstance(c, type) and issubclass(c, Module) for c in classes):
        raise MisconfigurationError(
            f"auto_wrap_policy takes module classes or a function(module) -> bool, got {policy!r}."
        )
    return _ClassPolicy(classes)


class FSDPStrategy(ProcessGroupStrategy):
    """Shards the model with ``torch.distributed.fsdp.fully_shard``.

    Args:
        auto_wrap_policy: module classes (``{TransformerBlock}``) or ``fn(module) -> bool`` naming the
            submodules sharded as their own unit; the root is always sharded.
        reshard_after_forward: free gathered parameters after forward (saves memory, costs a gather
            in backward).
        cpu_offload: keep sharded parameters and gradients in CPU memory (GPU runs).
        state_dict_type: ``"sharded"`` (a folder of per-rank shards via ``torch.distributed.checkpoint``,
            loadable on any number of processes) or ``"full"`` (one ``torch.save`` file written by rank 0).
        activation_checkpointing_policy: module classes whose forward is recomputed in backward.
    """

    name = "fsdp"
    supports_no_backward_sync = True

    def __init__(
        self,
        auto_wrap_policy: Any = None,
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        state_dict_type: str = "sharded",
        activation_checkpointing_policy: Any = None,
        start_method: str = "popen",
        process_group_backend: str | None = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            start_method=start_method, process_group_backend=process_group_backend, timeout=timeout, **kwargs
        )
        if state_dict_type not in _STATE_DICT_TYPES:
            raise MisconfigurationError(
                f"state_dict_type={state_dict_type!r} is not valid; choose 'sharded' or 'full'."
            )
        self.auto_wrap_policy = _policy(auto_wrap_policy)
        self.activation_checkpointing_policy = _policy(activation_checkpointing_policy)
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = cpu_offload
        self.state_dict_type = state_dict_type
        self._mesh: Any = None

    # ----------------------------------------------------------------- set-up
    def _device_mesh(self) -> Any:
        if self._mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            self._mesh = init_device_mesh(self.root_device.type, (self.world_size,))
        return self._mesh

    def module_to_device(self, module: Module) -> None:
        if not any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            module.to(self.root_device)

    def setup_module(self, module: Module) -> Module:
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        if self.activation_checkpointing_policy is not None:
            from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

            apply_activation_checkpointing(module, check_fn=self.activation_checkpointing_policy)
        options: dict[str, Any] = {"mesh": self._device_mesh(), "reshard_after_forward": self.reshard_after_forward}
        if self.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy()
        if self.auto_wrap_policy is not None:
            for submodule in reversed(list(module.modules())):  # innermost first
                if submodule is not module and self.auto_wrap_policy(submodule):
                    fully_shard(submodule, **options)
        fully_shard(module, **options)
        if any(p.is_meta for p in module.parameters()):
            module.to_empty(device=self.root_device)
            for submodule in module.modules():
                reset = getattr(submodule, "reset_parameters", None)
                if callable(reset):
                    reset()
        return module

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
        self, path: str | Path, state: dict[str, Any], storage_options: Any = None, filter: Any = None
    ) -> None:
        if self.state_dict_type == "full":
            from fabric_core.strategies.fsdp_checkpoint import full_state

            converted = full_state(self, state, filter)
            if self.is_global_zero:
                self.checkpoint_io.save_checkpoint(converted, path, storage_options=storage_options)
            self.barrier("save_checkpoint")
            return
        from fabric_core.strategies.fsdp_checkpoint import save_sharded

        save_sharded(self, Path(path), state, filter)

    def load_checkpoint(
        self, path: str | Path, state: Any = None, strict: bool = True, weights_only: bool = True
    ) -> dict[str, Any]:
        from fabric_core.strategies.fsdp_checkpoint import load_full, load_sharded

        if Path(path).is_dir():
            return load_sharded(self, Path(path), state, strict)
        return load_full(self, path, state, strict, weights_only)
