"""Loss-spike detection (``SpikeDetection``, as in ``lightning.fabric.utilities.spike``).

Call ``on_train_batch_end(fabric, loss, batch, batch_idx)`` after each step (or register it as a
Fabric callback and ``fabric.call("on_train_batch_end", ...)``). When the loss jumps away from its
running mean, the current and previous batch indices are written to a JSON file (so a resumed run can
skip them) and ``TrainingSpikeException`` stops every rank.
"""

from __future__ import annotations

import json
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Literal

import torch

from fabric_core.utilities.types import _PATH

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric


class TrainingSpikeException(RuntimeError):
    """Raised on every rank when any rank saw a loss spike."""

    def __init__(self, batch_idx: int, *args: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args)
        self.batch_idx = batch_idx


class SpikeDetection:
    """Stops training when the loss spikes against its running mean.

    A value is a spike when it is not an improvement on the previous one (per ``mode``) and differs
    from the mean of the last ``window`` values by at least ``atol`` and by at least ``rtol`` times
    that mean (a ``None`` tolerance is not checked); with ``finite_only`` a NaN or infinite loss is
    always a spike. Detection starts at batch ``warmup``. Each rank decides on its own loss; one rank
    seeing a spike stops them all.

    Args:
        mode: ``"min"`` when lower is better (a loss), ``"max"`` otherwise.
        window: how many recent values the running mean spans.
        warmup: the first batch index that is checked.
        atol: absolute tolerance, or ``None``.
        rtol: relative tolerance, or ``None``.
        exclude_batches_path: folder (or ``.json`` file) for the skipped batch indices; default the
            working directory, file ``skip_batches.json``.
        finite_only: treat non-finite values as spikes.
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "min",
        window: int = 10,
        warmup: int = 1,
        atol: float | None = None,
        rtol: float | None = 2.0,
        exclude_batches_path: _PATH | None = None,
        finite_only: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode. Has to be min or max, found {mode}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}.")
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only
        self.last_val: float = 0.0
        self.bad_batches: list[int] = []
        self._recent: deque[float] = deque(maxlen=window)

    @property
    def running_mean(self) -> float | None:
        """Mean of the last ``window`` accepted values, ``None`` before the first."""
        return sum(self._recent) / len(self._recent) if self._recent else None

    @torch.no_grad()
    def on_train_batch_end(self, fabric: Fabric, loss: torch.Tensor | float, batch: Any, batch_idx: int) -> None:
        """Check ``loss`` of batch ``batch_idx``; raise ``TrainingSpikeException`` on a spike anywhere."""
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        spike = batch_idx >= self.warmup and self._is_spike(value)
        finite = bool(torch.isfinite(torch.tensor(value)))
        if fabric.world_size > 1:
            flags = torch.tensor([float(spike), float(not finite)], device=fabric.device)
            flags = fabric.all_reduce(flags, reduce_op="sum")  # type: ignore[assignment]
            spike, finite = bool(flags[0] > 0), bool(flags[1] == 0)
        if spike:
            self._handle_spike(fabric, batch_idx)
        if self.finite_only or finite:
            self._recent.append(value)
            self.last_val = value

    def _is_spike(self, value: float) -> bool:
        if self.finite_only and not torch.isfinite(torch.tensor(value)):
            return True
        mean = self.running_mean
        if mean is None:
            return False
        change = value - self.last_val
        improved = change <= 0 if self.mode == "min" else change >= 0
        if improved:
            return False
        far = abs(value - mean)
        return (self.atol is None or far >= abs(self.atol)) and (self.rtol is None or far >= abs(self.rtol * mean))

    def _skip_file(self) -> str:
        path = os.fspath(self.exclude_batches_path if self.exclude_batches_path is not None else os.getcwd())
        return path if path.endswith(".json") else os.path.join(path, "skip_batches.json")

    def _handle_spike(self, fabric: Fabric, batch_idx: int) -> None:
        # The previous batch may have corrupted the weights; the current one may hold bad data.
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        self.exclude_batches_path = self._skip_file()
        if fabric.global_rank == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.exclude_batches_path)), exist_ok=True)
            with open(self.exclude_batches_path, "w") as file:
                json.dump(self.bad_batches, file, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue detection after a resume."""
        return {
            "last_val": self.last_val,
            "mode": self.mode,
            "warmup": self.warmup,
            "atol": self.atol,
            "rtol": self.rtol,
            "bad_batches": list(self.bad_batches),
            "bad_batches_path": None if self.exclude_batches_path is None else os.fspath(self.exclude_batches_path),
            "window": self.window,
            "recent": list(self._recent),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_val = state_dict["last_val"]
        self.mode = state_dict["mode"]
        self.warmup = state_dict["warmup"]
        self.atol = state_dict["atol"]
        self.rtol = state_dict["rtol"]
        self.bad_batches = list(state_dict["bad_batches"])
        self.exclude_batches_path = state_dict["bad_batches_path"]
        self.window = state_dict.get("window", self.window)
        self._recent = deque(state_dict.get("recent", []), maxlen=self.window)
