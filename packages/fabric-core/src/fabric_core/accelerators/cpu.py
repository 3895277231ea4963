"""The CPU accelerator: always available, any number of processes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fabric_core.accelerators.name import CallableName
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.utilities.device_parser import parse_device_indices

if TYPE_CHECKING:
    from fabric_core.plugins.precision import Precision


class CPUAccelerator(Accelerator):
    """Runs on the host CPU; ``devices`` counts processes (each uses the CPU)."""

    name = CallableName("cpu")

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def auto_device_count() -> int:
        return 1

    @classmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        if devices is None or devices == "auto":
            return [0]
        indices = parse_device_indices(devices, available=None, kind="cpu")
        # On the CPU an index list only says how many processes to run.
        return list(range(len(indices)))

    @classmethod
    def get_parallel_devices(cls, devices: Any) -> list[torch.device]:
        """One ``torch.device("cpu")`` per process that ``devices`` asks for."""
        return [torch.device("cpu")] * len(cls.parse_devices(devices))

    def get_device(self, index: int) -> torch.device:
        return torch.device("cpu")

    def setup_device(self, device: torch.device) -> None:
        """Nothing to prepare on the CPU; refuse any other kind of device."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"Device should be CPU, got {device} instead.")

    def check_precision(self, precision: str) -> None:
        supported = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-true", "16-mixed")
        if precision not in supported:
            from fabric_core.errors import MisconfigurationError

            raise MisconfigurationError(
                f"precision={precision!r} is not supported on accelerator {self.name!r}. "
                f"Supported: {', '.join(repr(p) for p in supported)}."
            )

    def create_precision(self, precision: str) -> Precision | None:
        """``16-mixed`` becomes ``bf16-mixed`` with a warning, as in Lightning (no fp16 AMP on the CPU)."""
        if precision != "16-mixed":
            return None
        import warnings

        from fabric_core.precision.mixed import MixedPrecision

        warnings.warn(
            "You passed Fabric(accelerator='cpu', precision='16-mixed'), but float16 AMP (with gradient scaling) is not "
            "supported on the CPU. Using precision='bf16-mixed' instead.",
            UserWarning,
            stacklevel=5,
        )
        return MixedPrecision("bf16-mixed", torch.bfloat16, "cpu")
