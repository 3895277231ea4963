"""Precision under DeepSpeed: the engine casts the model and keeps float32 master weights itself.

Fabric's own mixed precision autocasts around a float32 model. DeepSpeed's ``bf16``/``fp16`` modes
work differently: the engine stores the model in the low-precision dtype and the ZeRO optimizer keeps
a float32 copy it steps. So this precision writes the ``bf16``/``fp16`` section of the DeepSpeed
config, casts floating inputs to the model's dtype and outputs back to the default dtype, and uses no
autocast. The loss scaling of ``16-mixed`` happens inside the engine.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.precision import Precision, default_dtype
from fabric_core.plugins.tensors import convert_floating
from torch.nn import Module

from fabric_deepspeed.config import section_enabled

#: precision name -> (dtype the engine computes in, DeepSpeed config section or None)
SUPPORTED: dict[str, tuple[torch.dtype, str | None]] = {
    "32-true": (torch.float32, None),
    "bf16-mixed": (torch.bfloat16, "bf16"),
    "bf16-true": (torch.bfloat16, "bf16"),
    "16-mixed": (torch.float16, "fp16"),
    "16-true": (torch.float16, "fp16"),
}
# fp16 defaults: dynamic loss scaling starting at 2**16 (the user's config may refine them).
_FP16_DEFAULTS = {
    "enabled": True,
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}


def check_supported(name: str, accelerator_name: str) -> None:
    """Refuse precisions DeepSpeed cannot run here, naming the ones it can."""
    if name not in SUPPORTED:
        raise MisconfigurationError(
            f"precision={name!r} is not supported by the DeepSpeed strategies; choose one of "
            f"{', '.join(repr(n) for n in SUPPORTED)}."
        )
    # float16 runs on DeepSpeed's CPU accelerator too (engine casts, loss scaler), as under Lightning Fabric.


class DeepSpeedPrecision(Precision):
    """``32-true``, ``bf16-mixed``, ``bf16-true``, ``16-mixed`` or ``16-true`` as DeepSpeed implements them.

    ``-mixed`` and ``-true`` configure the engine the same way (low-precision model, float32 master
    weights in the optimizer); ``-true`` also creates new modules and tensors directly in the low dtype
    (``fabric.init_module()``) and casts the model before the engine sees it.
    """

    def __init__(self, name: str) -> None:
        if name not in SUPPORTED:
            check_supported(name, "any")
        self.name = name  # type: ignore[misc]
        self.dtype, self.section = SUPPORTED[name]
        self.is_identity = name == "32-true"  # type: ignore[misc]

    def configure(self, config: dict[str, Any]) -> None:
        """Switch on the engine's ``bf16``/``fp16`` mode in ``config``; refuse a config that says otherwise."""
        for other in ("bf16", "fp16"):
            if other != self.section and section_enabled(config, other):
                raise MisconfigurationError(
                    f"The DeepSpeed config enables {other}, but precision={self.name!r}. Pass "
                    f"precision={'bf16-mixed' if other == 'bf16' else '16-mixed'!r} to Fabric, or remove the {other!r} section."
                )
        if self.section is None:
            return
        section = config.setdefault(self.section, {})
        if "enabled" in section and not section["enabled"]:
            raise MisconfigurationError(
                f"precision={self.name!r} needs DeepSpeed's {self.section!r} mode, but the config disables it "
                f"({self.section}.enabled=false). Remove that entry or choose precision='32-true'."
            )
        defaults = _FP16_DEFAULTS if self.section == "fp16" else {"enabled": True}
        for key, value in defaults.items():
            section.setdefault(key, value)

    def convert_module(self, module: Module) -> Module:
        # '-mixed': the engine casts the model itself. ZeRO-3 partitioned parameters are already in
        # their dtype (created under deepspeed.zero.Init) and must not be touched.
        if "true" not in self.name or self.dtype == torch.float32 or _is_partitioned(module):
            return module
        return module.to(dtype=self.dtype)

    def forward_context(self) -> Any:
        return nullcontext()

    def tensor_init_context(self) -> Any:
        return default_dtype(self.dtype) if "true" in self.name and self.dtype != torch.float32 else nullcontext()

    def module_init_context(self) -> Any:
        return self.tensor_init_context()

    def convert_input(self, data: Any) -> Any:
        return data if self.is_identity else convert_floating(data, self.dtype)

    def convert_output(self, data: Any) -> Any:
        return data if self.is_identity else convert_floating(data, torch.get_default_dtype())


def _is_partitioned(module: Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())
