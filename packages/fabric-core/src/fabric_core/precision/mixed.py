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

    Two ways to build it: core's ``MixedPrecision(name, dtype, device_type, scaler=None)``, and
    Lightning's ``MixedPrecision(precision, device, scaler=None)`` where ``precision`` is
    ``"16-mixed"`` (a ``GradScaler`` is created when none is given) or ``"bf16-mixed"`` (no scaler).
    """

    is_identity = False

    def __init__(
        self,
        precision: str,
        dtype: torch.dtype | str | None = None,
        device_type: str | Any = None,
        scaler: Any = None,
        *,
        device: str | None = None,
    ) -> None:
        if not isinstance(dtype, torch.dtype):  # Lightning's form: (precision, device, scaler)
            if device_type is not None and not isinstance(device_type, str):
                scaler = device_type  # passed as the third positional argument
            device = dtype if dtype is not None else device
            device_type = _device_type(device)
            dtype, scaler = _lightning_form(precision, device_type, scaler)
        self.name = precision  # type: ignore[misc]
        self.dtype = dtype
        self.device_type = device_type if device_type is not None else "cpu"
        self.scaler = scaler
        self.skipped_steps = 0

    @property
    def precision(self) -> str:
        """Lightning's name for ``name``."""
        return self.name

    @property
    def device(self) -> str:
        """Lightning's name for ``device_type``."""
        return self.device_type

    @property
    def requires_fabric_backward(self) -> bool:
        return self.scaler is not None

    @property
    def plain_backward_and_step(self) -> bool:
        return self.scaler is None

    def forward_context(self) -> Any:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def convert_input(self, data: Any) -> Any:
        """Floating inputs enter the forward in the autocast dtype, as in Lightning."""
        dtype = self.dtype
        # Hot path, once per forward: positional tensors only (``data`` is ``(args, kwargs)``) are cast inline.
        if type(data) is tuple and len(data) == 2 and not data[1] and type(data[0]) is tuple:
            cast = []
            for arg in data[0]:
                if not isinstance(arg, Tensor):
                    return convert_floating(data, dtype)
                cast.append(arg.to(dtype) if arg.is_floating_point() and arg.dtype != dtype else arg)
            return tuple(cast), data[1]
        return convert_floating(data, dtype)

    def convert_output(self, data: Any) -> Any:
        dtype = torch.get_default_dtype()
        if isinstance(data, Tensor):  # the usual output: one tensor, cast without walking a collection
            return data.to(dtype) if data.is_floating_point() and data.dtype != dtype else data
        return convert_floating(data, dtype)

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


def _device_type(device: Any) -> str:
    """``"cuda"`` for ``"cuda:1"`` or ``torch.device("cuda", 1)``; CUDA for anything else (Lightning's default)."""
    if isinstance(device, torch.device):
        return device.type
    return device.split(":")[0] if isinstance(device, str) and device else "cuda"


def _lightning_form(precision: Any, device_type: str, scaler: Any) -> tuple[torch.dtype, Any]:
    """Validate Lightning's ``MixedPrecision(precision, device, scaler)`` and return (dtype, scaler)."""
    if precision not in ("16-mixed", "bf16-mixed"):
        raise ValueError(
            f"Passed `MixedPrecision(precision={precision!r})`. Precision must be '16-mixed' or 'bf16-mixed'."
        )
    if precision == "bf16-mixed":
        if scaler is not None:
            raise ValueError(f"`precision='bf16-mixed'` does not use a scaler, found {scaler}.")
        return torch.bfloat16, None
    if scaler is None:
        scaler = torch.amp.GradScaler(device=device_type)
    return torch.float16, scaler
