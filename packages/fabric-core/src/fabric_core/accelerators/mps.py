"""Apple-silicon GPUs through torch's MPS backend (one device, one process)."""

from __future__ import annotations

import os
from typing import Any

import torch

from fabric_core.accelerators.name import CallableName
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.utilities.device_parser import parse_device_indices


class MPSAccelerator(Accelerator):
    """The Metal GPU of an Apple-silicon Mac. Set ``DISABLE_MPS=1`` to keep ``"auto"`` on the CPU."""

    name = CallableName("mps")

    @classmethod
    def auto_select_priority(cls) -> int | None:
        return 5 if cls.is_available() else None  # above the CPU, below CUDA (which no Mac has)

    @staticmethod
    def is_available() -> bool:
        if os.environ.get("DISABLE_MPS", "0") == "1":
            return False
        return torch.backends.mps.is_available()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if os.environ.get("DISABLE_MPS", "0") == "1":
            return "DISABLE_MPS=1 is set"
        if not torch.backends.mps.is_built():
            return "this torch build has no MPS backend; MPS exists on Apple-silicon Macs only"
        return "torch.backends.mps.is_available() is False; MPS needs an Apple-silicon Mac with macOS 12.3 or later"

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @classmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        if devices is None or devices == "auto":
            return [0]
        return parse_device_indices(devices, available=1 if cls.is_available() else 0, kind="mps")

    @classmethod
    def get_parallel_devices(cls, devices: Any) -> list[torch.device]:
        """The ``torch.device`` objects ``devices`` asks for."""
        return [torch.device("mps", i) for i in cls.parse_devices(devices)]

    def get_device(self, index: int) -> torch.device:
        return torch.device("mps", index)

    def setup_device(self, device: torch.device) -> None:
        if torch.device(device).type != "mps":
            raise ValueError(f"Device should be MPS, got {device} instead.")
