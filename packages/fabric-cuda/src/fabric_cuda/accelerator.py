"""The CUDA accelerator: NVIDIA GPUs, registered as ``cuda`` and ``gpu``."""

from __future__ import annotations

from typing import Any

import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.precision import Precision
from fabric_core.plugins.tensors import parse_device_indices

from fabric_cuda import device_count


class CUDAAccelerator(Accelerator):
    """One process per GPU; collectives over NCCL.

    Everything plan resolution calls (``is_available``, ``auto_device_count``, ``parse_devices``,
    ``get_device``, ``check_precision``, ``create_precision``) leaves CUDA uninitialised, so the
    launching process can still fork its workers. CUDA starts in ``setup_device``, in the worker.
    """

    name = "cuda"

    @classmethod
    def auto_select_priority(cls) -> int | None:
        """Above the CPU (0): accelerator="auto" takes the GPUs when there are any."""
        return 10 if cls.is_available() else None

    def __init__(self) -> None:
        self._precision: str | None = None

    @staticmethod
    def is_available() -> bool:
        return device_count.is_cuda_available()

    @staticmethod
    def auto_device_count() -> int:
        return device_count.num_cuda_devices()

    @staticmethod
    def unavailable_reason() -> str:
        """Why ``is_available()`` is false, for the error that refuses ``accelerator="cuda"``."""
        return device_count.unavailable_reason()

    @classmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        """``"auto"``/``None``: every visible GPU; otherwise a count, -1, ``"0,2"`` or ``[0, 2]``."""
        available = device_count.num_cuda_devices()
        if devices is None or devices == "auto":
            if available == 0:
                raise MisconfigurationError(
                    f"devices='auto' found no CUDA device: {device_count.unavailable_reason()}. "
                    "Use accelerator='cpu' to run on the CPU."
                )
            return list(range(available))
        return parse_device_indices(devices, available=available, kind="cuda")

    def get_device(self, index: int) -> torch.device:
        return torch.device("cuda", index)

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` this process's current GPU, then run the checks that need the GPU."""
        if device.type != "cuda":
            raise MisconfigurationError(f"CUDAAccelerator can only set up a CUDA device, got {device}.")
        torch.cuda.set_device(device)
        from fabric_cuda.device_hints import check_precision_on_device

        check_precision_on_device(device, self._precision)

    def teardown(self) -> None:
        """Return cached blocks to the driver so that later work in this process (or others) can use them."""
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def default_process_group_backend(self) -> str:
        return "nccl"

    def check_precision(self, precision: str) -> None:
        """Every precision runs on CUDA; remember which one, for the checks in ``setup_device``."""
        self._precision = precision
        super().check_precision(precision)

    def create_precision(self, precision: str) -> Precision | None:
        """16-mixed gets a gradient scaler; bf16-mixed autocasts on CUDA; others come from core's registry."""
        if precision == "16-mixed":
            from fabric_cuda.precision import CUDAMixedPrecision

            return CUDAMixedPrecision()
        if precision == "bf16-mixed":
            from fabric_core.plugins.bases import MixedPrecision

            return MixedPrecision("bf16-mixed", torch.bfloat16, "cuda")
        return None
