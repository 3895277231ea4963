"""Autocast mixed precision, with an optional gradient scaler for float16."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer

from fabric_core.plugins.precision import Precision
from fabric_core.utilities.apply_func import convert_floating


class MixedPrecision(Precision):
    """Weights stay float32; operations autocast to ``dtype`` on ``device_type``.

    With a ``scaler`` (``torch.amp.GradScaler``) the loss is scaled before backward and the optimizer
    step is skipped when gradients overflowed; ``skipped_steps`` counts those skips.
    """

    is_identity = False

    def __init__(self, name: str, dtype: torch.dtype, device_type: str, scaler: Any = None) -> None:
        self.name = name  # type: ignore[misc]
        self.dtype = dtype
        self.device_type = device_type
        self.scaler = scaler
        self.skipped_steps = 0

    @property
    def requires_fabric_backward(self) -> bool:
        return self.scaler is not None

    def forward_context(self) -> Any:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        """Floating inputs enter the forward in the autocast dtype, as in Lightning."""
        return convert_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return convert_floating(data, torch.get_default_dtype())

    def pre_backward(self, tensor: Tensor, module: Module | None) -> Tensor:
        return self.scaler.scale(tensor) if self.scaler is not None else tensor

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        if self.scaler is None:
            return optimizer.step(**kwargs)
        scale_before = self.scaler.get_scale()
        result = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        if self.scaler.get_scale() < scale_before:
            self.skipped_steps += 1
        return result

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        if self.scaler is None or not self.scaler.is_enabled():
            return
        from torch.amp.grad_scaler import OptState

        # Unscaling twice in one step corrupts the gradients; the scaler remembers per optimizer.
        if self.scaler._per_optimizer_states[id(optimizer)]["stage"] is not OptState.UNSCALED:
            self.scaler.unscale_(optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state_dict:
            self.scaler.load_state_dict(state_dict["scaler"])
