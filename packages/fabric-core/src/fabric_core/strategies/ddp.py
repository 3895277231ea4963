"""Distributed data parallel: a full model copy per process, gradients all-reduced in backward."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel

from fabric_core.strategies.process_group import ProcessGroupStrategy


class DDPStrategy(ProcessGroupStrategy):
    """Wraps the module in ``DistributedDataParallel``.

    Args:
        find_unused_parameters: let DDP tolerate parameters that get no gradient in a step.
        **ddp_kwargs: passed to ``DistributedDataParallel`` (``static_graph``, ``bucket_cap_mb`` ...).
        start_method, process_group_backend, timeout: see ``ProcessGroupStrategy``.
    """

    name = "ddp"
    supports_no_backward_sync = True

    def __init__(
        self,
        start_method: str = "popen",
        find_unused_parameters: bool = False,
        process_group_backend: str | None = None,
        timeout: Any = None,
        accelerator: Any = None,
        precision: Any = None,
        checkpoint_io: Any = None,
        cluster_environment: Any = None,
        parallel_devices: list[torch.device] | None = None,
        **ddp_kwargs: Any,
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
        self.ddp_kwargs = {"find_unused_parameters": find_unused_parameters, **ddp_kwargs}

    def setup_module(self, module: Module) -> Module:
        if not any(p.requires_grad for p in module.parameters()):
            return module  # nothing to synchronise (frozen or parameter-free modules, inference)
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **self.ddp_kwargs)

    def no_backward_sync(self, module: Module, enabled: bool) -> AbstractContextManager:
        if enabled and isinstance(module, DistributedDataParallel):
            return module.no_sync()
        return nullcontext()
