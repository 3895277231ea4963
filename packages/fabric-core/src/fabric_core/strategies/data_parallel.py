"""Lightning's ``DataParallelStrategy``: one process driving several GPUs through ``torch.nn.DataParallel``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import Module

from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.checkpoint_io import CheckpointIO
from fabric_core.plugins.precision import Precision
from fabric_core.plugins.strategy import Strategy


class DataParallelStrategy(Strategy):
    """One process: each forward splits the batch over ``parallel_devices`` (``torch.nn.DataParallel``).

    The class Lightning scripts construct by name. The string ``strategy="dp"`` still runs as DDP (one
    process per device, torch's advice over DataParallel); pass ``DataParallelStrategy()`` for the
    single-process behaviour. On CPU devices DataParallel has nothing to split across: the module runs as it is.
    """

    name = "dp"
    one_process_drives_all_devices = True

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(
            accelerator=accelerator, precision=precision, checkpoint_io=checkpoint_io, parallel_devices=parallel_devices
        )

    @property
    def root_device(self) -> torch.device:
        """The first of ``parallel_devices``: where inputs go and outputs are gathered."""
        if not self.parallel_devices:
            return torch.device("cpu")
        first = self.parallel_devices[0]
        return first if isinstance(first, torch.device) else torch.device("cuda", int(first))

    def setup_module(self, module: Module) -> Module:
        """``torch.nn.DataParallel`` over the GPUs; the module unchanged on CPUs."""
        if self.root_device.type != "cuda":
            return module
        return torch.nn.DataParallel(module=module, device_ids=list(self.parallel_devices or []))

    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        """The user's module's state dict, without DataParallel's ``module.`` prefix."""
        return _unwrap(module).state_dict()

    def load_module_state_dict(self, module: Module, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        _unwrap(module).load_state_dict(state_dict, strict=strict)


def _unwrap(module: Module) -> Module:
    return module.module if isinstance(module, torch.nn.DataParallel) else module
