"""Throughput and model-FLOPs utilisation (names as in ``lightning.fabric.utilities.throughput``).

``Throughput`` turns running totals (time, batches, samples, items, FLOPs) into rolling per-second
rates over the last ``window_size`` updates; ``ThroughputMonitor`` does the same inside a Fabric run
and logs through ``fabric.log_dict``. ``measure_flops`` counts with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from fabric_core.utilities.rank_zero import rank_zero_only, rank_zero_warn

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.plugins.precision import Precision

Metrics = dict[str, int | float]


class _IncreasingWindow(deque):
    """The last ``maxlen`` values of a running total; refuses a value that does not increase."""

    def append(self, value: Any) -> None:
        if self and self[-1] >= value:
            raise ValueError(f"Expected the value to increase, last: {self[-1]}, current: {value}")
        super().append(value)


class Throughput:
    """Rolling throughput of a loop, from running totals passed to ``update``.

    ``compute()`` returns ``time``, ``batches``, ``samples`` (and ``lengths``) totals; once
    ``window_size`` updates were seen, also ``device/batches_per_sec``, ``device/samples_per_sec``,
    ``device/items_per_sec`` (with ``lengths``), ``device/flops_per_sec`` and ``device/mfu`` (with
    ``flops`` and ``available_flops``); with ``world_size > 1`` the job-wide rates without the
    ``device/`` prefix too.

    Args:
        available_flops: theoretical FLOPs per second of one device (for MFU).
        world_size: number of devices taking part; rates are multiplied by it for job-wide figures.
        window_size: number of updates the rolling rates span (at least 2).
        separator: between ``device`` and the metric name.
        using_sparse_model: the model uses 2:4 structured sparsity: ``available_flops`` is multiplied by
            ``sparse_cuda_acceleration_factor``.
        sparse_cuda_acceleration_factor: at least 1.
    """

    def __init__(
        self,
        available_flops: float | None = None,
        world_size: int = 1,
        window_size: int = 100,
        separator: str = "/",
        using_sparse_model: bool | None = None,
        sparse_cuda_acceleration_factor: float = 2.0,
    ) -> None:
        if sparse_cuda_acceleration_factor < 1.0:
            raise ValueError("sparse_cuda_acceleration_factor must be at least 1 (it cannot reduce peak FLOPs).")
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}.")
        if window_size < 2:
            raise ValueError(f"window_size must be at least 2, got {window_size}.")
        if using_sparse_model is None and available_flops is not None:
            rank_zero_warn(
                "MFU assumes dense model FLOPs (no sparsity acceleration). Set using_sparse_model=True for sparse FLOPs."
            )
        if using_sparse_model and available_flops is not None:
            available_flops *= sparse_cuda_acceleration_factor
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self.window_size = window_size
        self._time: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._batches: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._samples: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._lengths: _IncreasingWindow = _IncreasingWindow(maxlen=window_size)
        self._flops: deque[float] = deque(maxlen=window_size)

    def update(
        self, *, time: float, batches: int, samples: int, lengths: int | None = None, flops: int | None = None
    ) -> None:
        """Record running totals for this device.

        Args:
            time: seconds elapsed since the start (increasing).
            batches: batches seen so far (increasing).
            samples: samples seen so far (increasing, at least ``batches``).
            lengths: items (tokens) seen so far (at least ``samples``).
            flops: FLOPs this device spent since the previous ``update`` (see ``measure_flops``).
        """
        self._time.append(time)
        if samples < batches:
            raise ValueError(f"Expected samples ({samples}) to be greater or equal than batches ({batches})")
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            if lengths < samples:
                raise ValueError(f"Expected lengths ({lengths}) to be greater or equal than samples ({samples})")
            self._lengths.append(lengths)
            if len(self._samples) != len(self._lengths):
                raise RuntimeError(
                    f"If lengths are passed ({len(self._lengths)}), there needs to be the same number of samples"
                    f" ({len(self._samples)})"
                )
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> Metrics:
        """Totals, and the rolling rates once the window is full."""
        metrics: Metrics = {"time": self._time[-1], "batches": self._batches[-1], "samples": self._samples[-1]}
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        device = f"device{self.separator}"
        job_wide = self.world_size > 1
        elapsed = self._time[-1] - self._time[0]
        if len(self._time) == self.window_size:
            batches_per_sec = (self._batches[-1] - self._batches[0]) / elapsed
            samples_per_sec = (self._samples[-1] - self._samples[0]) / elapsed
            metrics[f"{device}batches_per_sec"] = batches_per_sec
            metrics[f"{device}samples_per_sec"] = samples_per_sec
            if job_wide:
                metrics["batches_per_sec"] = batches_per_sec * self.world_size
                metrics["samples_per_sec"] = samples_per_sec * self.world_size
            if len(self._lengths) == self.window_size:
                items_per_sec = (self._lengths[-1] - self._lengths[0]) / elapsed
                metrics[f"{device}items_per_sec"] = items_per_sec
                if job_wide:
                    metrics["items_per_sec"] = items_per_sec * self.world_size
        if len(self._flops) == self.window_size:
            # each entry is the work done since the previous update: the first one precedes the window
            flops_per_sec = (sum(self._flops) - self._flops[0]) / elapsed
            device_flops_per_sec = flops_per_sec / self.world_size
            if job_wide:
                metrics["flops_per_sec"] = flops_per_sec
            metrics[f"{device}flops_per_sec"] = device_flops_per_sec
            if self.available_flops:
                metrics[f"{device}mfu"] = device_flops_per_sec / self.available_flops
        return metrics

    def reset(self) -> None:
        """Forget every update."""
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


class ThroughputMonitor(Throughput):
    """``Throughput`` for a Fabric run: the world size, device FLOPs and logging come from ``fabric``.

    ``update``, ``compute``, ``compute_and_log`` and ``reset`` act on global rank 0 only (elsewhere
    ``compute`` returns ``{}``). ``compute_and_log`` counts its own steps unless given ``step``.
    """

    def __init__(self, fabric: Fabric, **kwargs: Any) -> None:
        dtype = _compute_dtype(fabric.strategy.precision)
        super().__init__(
            available_flops=get_available_flops(fabric.device, dtype), world_size=fabric.world_size, **kwargs
        )
        self._fabric = fabric
        self.step = -1
        self.update = rank_zero_only(self.update)  # type: ignore[method-assign]
        self.compute = rank_zero_only(self.compute, default={})  # type: ignore[method-assign,assignment]
        self.compute_and_log = rank_zero_only(self.compute_and_log, default={})  # type: ignore[method-assign,assignment]
        self.reset = rank_zero_only(self.reset)  # type: ignore[method-assign]

    def compute_and_log(self, step: int | None = None, **kwargs: Any) -> Metrics:
        """``compute()`` and log the result with ``fabric.log_dict`` at ``step`` (default: the next step)."""
        self.step = self.step + 1 if step is None else step
        metrics = self.compute(**kwargs)
        self._fabric.log_dict(metrics=metrics, step=self.step)
        return metrics


def measure_flops(
    model: torch.nn.Module,
    forward_fn: Callable[[], torch.Tensor],
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """FLOPs of one ``forward_fn()`` call (plus loss and backward when ``loss_fn`` is given).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``; a model on the ``meta`` device costs no
    memory or time.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return counter.get_total_flops()


# Dense peak FLOPs per second from the vendors' data sheets, by chip and dtype ("tf32": float32
# matmuls on tensor cores, used when torch.get_float32_matmul_precision() is not "highest").
_CUDA_PEAK_FLOPS: dict[str, dict[torch.dtype | str, float]] = {
    "h100 sxm": {torch.float64: 34e12, torch.float32: 67e12, "tf32": 494.7e12, torch.bfloat16: 989.5e12,
                 torch.float16: 989.5e12, torch.int8: 1979e12},
    "h100 pcie": {torch.float64: 25.6e12, torch.float32: 51.2e12, "tf32": 378e12, torch.bfloat16: 756e12,
                  torch.float16: 756e12, torch.int8: 1513e12},
    "a100": {torch.float64: 9.7e12, torch.float32: 19.5e12, "tf32": 156e12, torch.bfloat16: 312e12,
             torch.float16: 312e12, torch.int8: 624e12},
    "a10g": {torch.float32: 31.2e12, "tf32": 62.5e12, torch.bfloat16: 125e12, torch.float16: 125e12,
             torch.int8: 250e12},
    "l4": {torch.float32: 30.3e12, "tf32": 60e12, torch.bfloat16: 121e12, torch.float16: 121e12, torch.int8: 242e12},
    "t4": {torch.float32: 8.1e12, torch.float16: 65e12, torch.int8: 130e12},
    "v100": {torch.float64: 7.8e12, torch.float32: 15.7e12, torch.float16: 125e12},
    "v100 pcie": {torch.float64: 7e12, torch.float32: 14e12, torch.float16: 112e12},
    "v100s": {torch.float64: 8.2e12, torch.float32: 16.4e12, torch.float16: 130e12},
    # H200 SXM computes as H100 SXM; the NVL boards (H100 NVL, H200 NVL) are listed per GPU.
    "nvl": {torch.float64: 30e12, torch.float32: 60e12, "tf32": 417.5e12, torch.bfloat16: 835e12,
            torch.float16: 835e12, torch.int8: 1670e12},
    # Ada and Ampere workstation/consumer boards: FP32 shader rate; tensor rates with FP32 accumulation.
    "l40": {torch.float32: 90.5e12, "tf32": 90.5e12, torch.bfloat16: 181e12, torch.float16: 181e12},
    "rtx 4090": {torch.float32: 82.6e12, "tf32": 82.6e12, torch.bfloat16: 165.2e12, torch.float16: 165.2e12},
    "rtx 4080": {torch.float32: 48.7e12, "tf32": 48.7e12, torch.bfloat16: 97.5e12, torch.float16: 97.5e12},
    "a6000": {torch.float32: 38.7e12, "tf32": 77.4e12, torch.bfloat16: 154.8e12, torch.float16: 154.8e12},
    "a40": {torch.float32: 37.4e12, "tf32": 74.8e12, torch.bfloat16: 149.7e12, torch.float16: 149.7e12},
    "rtx 3090 ti": {torch.float32: 40e12, "tf32": 40e12, torch.bfloat16: 80e12, torch.float16: 80e12},
    "rtx 3090": {torch.float32: 35.6e12, "tf32": 35.6e12, torch.bfloat16: 71e12, torch.float16: 71e12},
    "rtx 3080 ti": {torch.float32: 34.1e12, "tf32": 34.1e12, torch.bfloat16: 68.2e12, torch.float16: 68.2e12},
    "rtx 3080": {torch.float32: 29.8e12, "tf32": 29.8e12, torch.bfloat16: 59.5e12, torch.float16: 59.5e12},
    "rtx 3070": {torch.float32: 20.3e12, "tf32": 20.3e12, torch.bfloat16: 40.6e12, torch.float16: 40.6e12},
    # Turing: no bf16 or tf32.
    "titan rtx": {torch.float32: 16.3e12, torch.float16: 130.5e12},
    "quadro rtx 5000": {torch.float32: 11.2e12, torch.float16: 89.2e12},
    "rtx 2080 ti": {torch.float32: 13.4e12, torch.float16: 53.8e12},
    "rtx 2080 super": {torch.float32: 11.2e12, torch.float16: 44.6e12},
    "rtx 2080": {torch.float32: 10.1e12, torch.float16: 40.3e12},
    "rtx 2070 super": {torch.float32: 9.1e12, torch.float16: 36.3e12},
}  # fmt: skip

#: Substrings of ``torch.cuda.get_device_name()`` (lower case) -> table row; the first match wins, so
#: longer names ("rtx 3090 ti") come before their prefixes ("rtx 3090").
_CUDA_NAME_ROWS = (
    "a100", "a10g", "l40", "l4", "t4", "v100s", "rtx 4090", "rtx 4080", "a6000", "a40", "rtx 3090 ti", "rtx 3090",
    "rtx 3080 ti", "rtx 3080", "rtx 3070", "titan rtx", "quadro rtx 5000", "rtx 2080 ti", "rtx 2080 super",
    "rtx 2080", "rtx 2070 super",
)  # fmt: skip


def _cuda_chip(device_name: str) -> str | None:
    name = device_name.lower()
    if "nvl" in name and ("h100" in name or "h200" in name):
        return "nvl"
    if "h100" in name or "h200" in name:
        return "h100 pcie" if ("pcie" in name or "hbm2e" in name) else "h100 sxm"
    if "v100" in name and "v100s" not in name:
        return "v100 pcie" if "pcie" in name else "v100"
    for chip in _CUDA_NAME_ROWS:
        at = name.find(chip)
        rest = name[at + len(chip) :] if at >= 0 else ""
        # "rtx 3070" must not stand for an unlisted "rtx 3070 ti" (nor "a40" for an "a400").
        if at >= 0 and not rest.startswith((" ti", " super", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")):
            return chip
    return None


def get_available_flops(device: torch.device, dtype: torch.dtype | str) -> int | None:
    """Theoretical peak FLOPs per second of ``device`` for ``dtype``, or ``None`` where unknown (CPUs).

    An optimistic upper bound (dense matmuls only), used for model-FLOPs utilisation (MFU).
    """
    if device.type != "cuda":
        return None
    device_name = torch.cuda.get_device_name(device)
    chip = _cuda_chip(device_name)
    if chip is None:
        rank_zero_warn(f"FLOPs not found for {device_name!r}")
        return None
    table = _CUDA_PEAK_FLOPS[chip]
    if dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest" and "tf32" in table:
        dtype = "tf32"  # float32 matmuls run on tensor cores (Ampere and later list a tf32 figure)
    if dtype not in table:
        rank_zero_warn(f"{device_name!r} does not support {dtype}")
        return None
    return int(table[dtype])


def _compute_dtype(precision: Precision) -> torch.dtype:
    """The dtype the precision computes matmuls in."""
    dtype = getattr(precision, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    name = getattr(precision, "name", "32-true")
    if name.startswith("bf16"):
        return torch.bfloat16
    if name.startswith("16"):
        return torch.float16
    if name.startswith("64"):
        return torch.float64
    return torch.float32
