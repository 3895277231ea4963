"""Fully sharded data parallel with torch_xla's ``XlaFullyShardedDataParallel``, a replica per device."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.checkpointing import CheckpointError
from torch import Tensor

from fabric_xla import probe
from fabric_xla.strategies.data_parallel import XLAStrategy

if TYPE_CHECKING:
    from concurrent.futures import Future

    from torch.nn import Module, Parameter
    from torch.optim import Optimizer

_STRATEGY_ARGS = ("accelerator", "precision", "checkpoint_io", "cluster_environment", "parallel_devices")


class XLAFSDPStrategy(XLAStrategy):
    """Shards parameters, gradients and optimizer state over the replicas (torch_xla's FSDP).

    Parameters are flattened and sharded when the module is set up, so create the optimizer after
    ``model = fabric.setup_module(model)``, from ``model.parameters()`` (the wrapper's shards), then pass it
    to ``fabric.setup_optimizers``. Checkpoints are folders with one shard file per replica
    (``rank-00000-of-00008.pt``) and a checksum manifest; ``fabric.load`` restores them with the same
    number of replicas, and ``fabric_xla.consolidate_checkpoint`` merges the model shards into one
    ordinary file that any strategy loads.

    Args:
        auto_wrap_policy: which submodules become their own FSDP unit (torch_xla's wrap policies).
        start_method, allow_cpu_multiprocess: as for ``XLAStrategy``.
        **fsdp_kwargs: passed to ``XlaFullyShardedDataParallel`` (``compute_dtype``, ``flatten_parameters``...).
    """

    name = "xla_fsdp"
    supports_no_backward_sync = False
    # torch_xla's FSDP moves the parameters into its wrapper (flattened shards): the module fabric.setup_module
    # returns lists those, so an optimizer is built from ``model.parameters()``.
    wrapper_owns_parameters = True

    def __init__(
        self,
        auto_wrap_policy: Callable[..., Any] | None = None,
        start_method: str = "fork",
        allow_cpu_multiprocess: bool = False,
        **kwargs: Any,
    ) -> None:
        strategy_kwargs = {k: kwargs.pop(k) for k in _STRATEGY_ARGS if k in kwargs}
        super().__init__(start_method=start_method, allow_cpu_multiprocess=allow_cpu_multiprocess, **strategy_kwargs)
        self._fsdp_kwargs = dict(kwargs)
        if auto_wrap_policy is not None:
            self._fsdp_kwargs["auto_wrap_policy"] = auto_wrap_policy
        self._wrappers: weakref.WeakKeyDictionary[Module, Module] = weakref.WeakKeyDictionary()

    def _fresh_runtime_state(self) -> dict[str, Any]:
        return {**super()._fresh_runtime_state(), "_wrappers": weakref.WeakKeyDictionary()}

    def _validate_devices(self) -> None:
        super()._validate_devices()
        available = probe.local_device_count()
        if probe.pjrt_device() == "CPU" and available > 1 and self.num_processes == 1:
            raise MisconfigurationError(
                f"strategy {self.name!r} with one replica on PyTorch/XLA's CPU device needs CPU_NUM_DEVICES=1 (it is "
                f"{available}): XLA compiles FSDP's reduce-scatter for every device of the host and rejects it. Set "
                "CPU_NUM_DEVICES=1, or shard over several CPU devices with strategy='xla_spmd_fsdp'."
            )

    # ------------------------------------------------------------------- set-up
    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer], scheduler: Any = None
    ) -> tuple[Module, list[Optimizer], Any]:
        if optimizers:
            raise MisconfigurationError(
                f"strategy {self.name!r} flattens and shards the parameters, so an optimizer created before set-up "
                "would update tensors the model no longer uses. Set up the model first, then the optimizer:\n"
                "    model = fabric.setup_module(model)\n"
                "    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters()))"
            )
        return self.setup_module(module), [], scheduler

    def setup_module(self, module: Module) -> Module:
        from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel

        if isinstance(module, XlaFullyShardedDataParallel):
            wrapped = module
        else:
            if self.world_size > 1:
                import torch_xla.core.xla_model as xm

                xm.broadcast_master_param(module)  # every replica shards the same initial weights
            wrapped = XlaFullyShardedDataParallel(module, **self._fsdp_kwargs)
        self._wrappers[module] = wrapped
        return wrapped

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        sharded = {id(p) for wrapper in self._wrappers.values() for p in wrapper.parameters()}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if id(param) not in sharded:
                    raise MisconfigurationError(
                        "The optimizer holds parameters that are not the sharded parameters of a module set up with "
                        f"strategy {self.name!r}. Create it from the module fabric.setup_module returned: "
                        "torch.optim.AdamW(model.parameters())."
                    )
        return optimizer

    def _wrapper_of(self, module: Module) -> Module | None:
        return self._wrappers.get(module)

    # ------------------------------------------------------------------ training
    def _reduce_gradients(self, optimizer: Optimizer) -> None:
        """Nothing to do: FSDP reduce-scatters the gradients during backward."""

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor:
        """The norm over all shards (FSDP's own ``clip_grad_norm_``), so every replica clips alike."""
        clip = getattr(module, "clip_grad_norm_", None)
        if clip is None:
            raise MisconfigurationError(
                "clip_gradients with max_norm needs the module returned by fabric.setup_module."
            )
        return clip(max_norm, norm_type)

    # -------------------------------------------------------------- checkpoints
    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        wrapper = self._wrapper_of(module)
        return wrapper.state_dict() if wrapper is not None else module.state_dict()

    def load_module_state_dict(self, module: Module, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        wrapper = self._wrapper_of(module)
        if wrapper is None:
            module.load_state_dict(state_dict, strict=strict)
            return
        if not any("_fsdp_shard" in key for key in state_dict) and any(True for _ in state_dict):
            raise CheckpointError(
                f"strategy {self.name!r} restores the sharded checkpoints it writes (folders of per-replica shards); "
                "this is a full state dict. Load full weights into the model before fabric.setup_module(model)."
            )
        wrapper.load_state_dict(state_dict, strict=strict)

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        async_: bool = False,
    ) -> Future[None] | None:
        """Every replica writes its shard into the folder ``path`` (a local path or an fsspec URL); the
        checksum manifest, written last, completes it (see ``fabric_xla.shard_folder``)."""
        if async_:
            raise ValueError(
                f"async_=True writes single-file checkpoints; strategy {self.name!r} saves its folder of shards "
                "synchronously (the manifest that completes it needs every replica's file). Drop async_, or use "
                "strategy='xla_spmd_fsdp', whose checkpoints are single files."
            )
        from fabric_core.plugins.checkpointing import convert_state_for_saving
        from fabric_core.plugins.wrapped import unwrap_module
        from torch.nn import Module

        from fabric_xla.checkpoint import to_cpu
        from fabric_xla.shard_folder import SHARD_INFO_KEY, save_shards

        shard = to_cpu(convert_state_for_saving(self, state, filter))
        metadata = {}
        for key, obj in state.items():
            wrapper = self._wrapper_of(unwrap_module(obj)) if isinstance(obj, Module) else None
            if wrapper is not None:
                metadata[key] = wrapper.get_shard_metadata()  # type: ignore[operator]
        shard[SHARD_INFO_KEY] = {"rank": self.global_rank, "world_size": self.world_size, "shard_metadata": metadata}
        save_shards(self, path, shard, storage_options)
        return None

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | Any = None,
        strict: bool = True,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        """Restore this replica's shard from the folder ``path`` written with the same number of replicas
        (checksums verified unless ``verify=False``); a single file loads as with any strategy."""
        from fabric_core.plugins import checkpoint_folders as folders
        from fabric_core.plugins.checkpointing import restore_state

        from fabric_xla.shard_folder import load_shard

        if not folders.is_folder(path, storage_options):
            return super().load_checkpoint(path, state, strict, weights_only, verify, storage_options)
        self.barrier("load_checkpoint")
        shard = load_shard(self, path, weights_only=weights_only, verify=verify, storage_options=storage_options)
        return restore_state(self, shard, state, strict=strict, path=path)


def sharded_parameters(module: Module) -> Iterator[Parameter]:
    """The sharded parameters of a module set up with ``xla_fsdp``; the same as ``module.parameters()``.

    Kept for scripts written before the module ``fabric.setup_module`` returns listed the wrapper's
    shards itself; new code builds the optimizer from ``model.parameters()``.
    """
    from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel

    inner = getattr(module, "_forward_module", module)
    if not isinstance(inner, XlaFullyShardedDataParallel):
        raise TypeError("sharded_parameters expects the module fabric.setup_module returned with strategy 'xla_fsdp'.")
    return inner.parameters()
