"""What every XLA strategy shares: cutting the lazy graph after the optimizer step, host-side checkpoints."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fabric_core.plugins.strategy import Strategy

if TYPE_CHECKING:
    from concurrent.futures import Future

    import torch
    from torch import Tensor
    from torch.nn import Module
    from torch.optim import Optimizer

XLA_ACCELERATORS = ("tpu", "xla")


class XLAStrategyBase(Strategy):
    """Runs the lazy XLA graph once per optimizer step and writes checkpoints from host copies.

    PyTorch/XLA records operations and compiles/executes them only at a sync point. Syncing right after
    ``optimizer.step()`` makes one graph per training step (forward, backward, update), the same graph
    every step, so it compiles once.
    """

    supported_accelerators = XLA_ACCELERATORS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # id(parameter moved to the device) -> (weak reference to it, its device copy); see module_to_device.
        self._moved: dict[int, tuple[weakref.ref, Tensor]] = {}

    def setup_environment(self) -> None:
        from fabric_xla.xla_import import require_torch_xla

        require_torch_xla()
        super().setup_environment()

    def _fresh_runtime_state(self) -> dict[str, Any]:
        """Per-process state, recreated empty when the strategy is sent to worker processes."""
        return {"_moved": {}}

    def __getstate__(self) -> dict[str, Any]:
        transient = self._fresh_runtime_state()
        return {k: v for k, v in self.__dict__.items() if k not in transient}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.update(self._fresh_runtime_state())

    def module_to_device(self, module: Module) -> None:
        """Move ``module`` and remember which new parameter replaced which.

        Unlike CUDA, moving a module to an XLA device creates new ``Parameter`` objects, so an optimizer
        built before the move would still hold the CPU tensors; ``setup_optimizer`` points it at the copies.
        """
        before = dict(module.named_parameters(remove_duplicate=False))
        module.to(self.root_device)
        after = dict(module.named_parameters(remove_duplicate=False))
        for name, old in before.items():
            new = after.get(name)
            if new is not None and new is not old:
                self._moved[id(old)] = (weakref.ref(old), new)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Point ``optimizer`` (and any state it already has) at the parameters on the device."""
        for group in optimizer.param_groups:
            group["params"] = [self._device_copy(p) for p in group["params"]]
        for old in list(optimizer.state):
            new = self._device_copy(old)
            if new is not old:
                optimizer.state[new] = optimizer.state.pop(old)
        return optimizer

    def _device_copy(self, param: Tensor) -> Tensor:
        entry = self._moved.get(id(param))
        return entry[1] if entry is not None and entry[0]() is param else param

    def _before_step(self, optimizer: Optimizer, recomputed: bool = False) -> None:
        """Hook run after backward and before the update (gradient reduction for data parallel).

        ``recomputed`` is ``True`` when an optimizer closure has just computed the gradients afresh.
        """

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        import torch_xla

        closure = kwargs.get("closure")
        if closure is not None:
            # A closure (LBFGS) recomputes the gradients; reduce them each time it runs.
            def closure_then_reduce() -> Any:
                loss = closure()
                self._before_step(optimizer, recomputed=True)
                return loss

            kwargs["closure"] = closure_then_reduce
        else:
            self._before_step(optimizer)
        output = self.precision.optimizer_step(optimizer, **kwargs)
        torch_xla.sync()
        return output

    def process_dataloader(self, dataloader: Any, device: torch.device | None) -> Any:
        """Batches uploaded in the background by torch_xla's loader (what ``MpDeviceLoader`` wraps); each batch
        also ends the pending graph. ``None`` (move each batch with ``batch_to_device``) when not moving batches."""
        if device is None or device.type != "xla":
            return None
        from fabric_xla.data_loading import device_batches

        return device_batches(dataloader, device)

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        async_: bool = False,
    ) -> Future[None] | None:
        """Convert ``state``, copy XLA tensors to the host on every process, write from global rank 0.

        The file is core's (atomic, checksummed, fsspec URLs with ``storage_options``); with ``async_`` it is
        written in the background from the host copy.
        """
        from fabric_core.plugins.checkpointing import convert_state_for_saving

        from fabric_xla.checkpoint import to_cpu

        converted = to_cpu(convert_state_for_saving(self, state, filter))
        return self._write_from_rank_zero(converted, path, storage_options, async_)
