"""``16-mixed`` on CUDA: float16 autocast with a gradient scaler that is created on first use.

Core's ``MixedPrecision`` already scales the loss, unscales before clipping, skips the optimizer
step on inf/NaN gradients and counts those skips in ``skipped_steps``. Two things are added here:

- The ``torch.amp.GradScaler`` is built lazily. Building it asks ``torch.cuda.is_available()``, which
  initialises CUDA; plan resolution runs in the launching process before workers are forked, so the
  scaler must come to life in the worker, at its first use.
- An occasional skipped step is normal while the scale calibrates and needs no message. A long run
  of consecutive skips means the loss or gradients are NaN and the model has stopped learning: that
  is reported once per streak, on global rank 0.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from fabric_core.plugins.bases import MixedPrecision
from torch.optim import Optimizer

#: Consecutive skipped steps after which training is reported as stalled. Each skip halves the
#: scale, so 25 skips take the default scale of 2**16 below 2**-8: no calibration needs that long.
DEFAULT_STALL_WARNING_AFTER = 25


class CUDAMixedPrecision(MixedPrecision):
    """float16 autocast on CUDA with loss scaling; ``skipped_steps`` counts steps skipped on inf/NaN.

    Args:
        scaler: a ``torch.amp.GradScaler`` to use; by default one with torch's defaults is created on
            first use (in the worker process).
        stall_warning_after: warn when this many optimizer steps in a row were skipped.
    """

    def __init__(self, scaler: Any = None, stall_warning_after: int = DEFAULT_STALL_WARNING_AFTER) -> None:
        if isinstance(stall_warning_after, bool) or not isinstance(stall_warning_after, int) or stall_warning_after < 1:
            raise ValueError(f"stall_warning_after must be a positive int, got {stall_warning_after!r}.")
        self._scaler = scaler
        super().__init__("16-mixed", torch.float16, "cuda", scaler=scaler)
        self.stall_warning_after = stall_warning_after
        self.consecutive_skipped_steps = 0

    @property  # type: ignore[override]
    def scaler(self) -> Any:
        """The gradient scaler, created on first access."""
        if self._scaler is None:
            self._scaler = torch.amp.GradScaler("cuda")
        return self._scaler

    @scaler.setter
    def scaler(self, value: Any) -> None:
        self._scaler = value

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state and the skip counter, so that a resumed run continues both."""
        return {**super().state_dict(), "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.skipped_steps = int(state_dict.get("skipped_steps", self.skipped_steps))

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        skipped_before = self.skipped_steps
        result = super().optimizer_step(optimizer, **kwargs)
        if self.skipped_steps == skipped_before:
            self.consecutive_skipped_steps = 0
            return result
        self.consecutive_skipped_steps += 1
        if self.consecutive_skipped_steps == self.stall_warning_after and _is_global_rank_zero():
            warnings.warn(
                f"precision='16-mixed': the last {self.consecutive_skipped_steps} optimizer steps were skipped because "
                f"the gradients held inf/NaN (loss scale now {self.scaler.get_scale():.3g}); the model is not learning. "
                "Check the loss for NaN (a bad batch, a learning rate that is too high), or use precision='bf16-mixed' "
                "where the GPU supports it. precision.skipped_steps counts every skipped step.",
                RuntimeWarning,
                stacklevel=4,
            )
        return result


def _is_global_rank_zero() -> bool:
    """Rank 0 of the process group when one is running; a single process is rank 0."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
