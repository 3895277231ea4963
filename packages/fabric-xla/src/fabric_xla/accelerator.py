"""The XLA accelerator: TPUs, or PyTorch/XLA's CPU device when PJRT_DEVICE=CPU asks for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.tensors import parse_device_indices

from fabric_xla import probe

if TYPE_CHECKING:
    from fabric_core.plugins.precision import Precision

#: Beats the CPU (0) for ``accelerator="auto"``; only on a real TPU (see ``auto_select_priority``).
TPU_AUTO_PRIORITY = 20
SUPPORTED_PRECISIONS = ("32-true", "bf16-true", "bf16-mixed")
NO_DEVICE = (
    "no TPU chip is attached to this machine and PJRT_DEVICE is not set. On a TPU VM check that the TPU is "
    "visible; to run on PyTorch/XLA's CPU device (for tests) set PJRT_DEVICE=CPU, and CPU_NUM_DEVICES=N for N "
    "virtual devices"
)


class XLAAccelerator(Accelerator):
    """Devices driven through PyTorch/XLA (``torch.device("xla", i)``).

    ``accelerator="auto"`` chooses it only on a TPU (PJRT_DEVICE=TPU, or unset with TPU chips on the
    PCI bus). ``accelerator="tpu"``/``"xla"`` also runs on whatever device type PJRT_DEVICE names,
    for example ``PJRT_DEVICE=CPU`` (with ``CPU_NUM_DEVICES=N`` virtual devices) to test on a laptop.
    """

    name = "tpu"

    @classmethod
    def auto_select_priority(cls) -> int | None:
        """Only a real TPU is picked by ``"auto"``; PJRT_DEVICE=CPU stays reachable by name (for tests)."""
        try:
            return TPU_AUTO_PRIORITY if probe.tpu_present() and cls.is_available() else None
        except Exception:
            return None

    @staticmethod
    def is_available() -> bool:
        """torch_xla installed for this torch, and a TPU or a PJRT_DEVICE to run on. Reads no runtime."""
        try:
            return probe.installation_problem() is None and probe.device_configured()
        except Exception:
            return False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """What is missing: a usable torch_xla, or a device (with how to get one)."""
        try:
            problem = probe.installation_problem()
        except Exception as err:
            return f"the installation could not be checked: {err}"
        if problem is not None:
            return problem
        if not probe.device_configured():
            return NO_DEVICE
        return None

    @staticmethod
    def auto_device_count() -> int:
        """Every XLA device of this host (TPU cores, or CPU_NUM_DEVICES virtual CPU devices)."""
        try:
            return max(1, probe.local_device_count())
        except Exception:
            return 1

    @classmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        if devices is None or devices == "auto":
            return list(range(cls.auto_device_count()))
        return parse_device_indices(devices, available=cls.auto_device_count(), kind="tpu")

    def get_device(self, index: int) -> torch.device:
        # Only a name: creating it does not start the XLA runtime (which must not run before spawning).
        return torch.device("xla", index)

    def setup_device(self, device: torch.device) -> None:
        from fabric_xla.xla_import import require_torch_xla

        require_torch_xla()

    def default_process_group_backend(self) -> str:
        return "xla"

    def check_precision(self, precision: str) -> None:
        """Explain the float16 / float64 refusals: TPUs compute in bfloat16 and lack float64."""
        if precision in ("16-mixed", "16-true"):
            raise MisconfigurationError(
                f"precision={precision!r} is not supported on XLA devices: TPUs compute in bfloat16, not float16. "
                f"Use precision='bf16-mixed' (or 'bf16-true'). Supported: {', '.join(repr(p) for p in SUPPORTED_PRECISIONS)}."
            )
        if precision == "64-true":
            raise MisconfigurationError(
                "precision='64-true' is not supported on XLA devices (TPUs have no float64 units). "
                f"Supported: {', '.join(repr(p) for p in SUPPORTED_PRECISIONS)}."
            )
        if precision not in SUPPORTED_PRECISIONS:
            raise MisconfigurationError(
                f"precision={precision!r} is not supported on accelerator {self.name!r}. "
                f"Supported: {', '.join(repr(p) for p in SUPPORTED_PRECISIONS)}."
            )

    def create_precision(self, precision: str) -> Precision | None:
        from fabric_xla.precision import xla_precision

        return xla_precision(precision)

    def auto_strategy(self, num_processes: int) -> str:
        """``single_xla`` for one device; ``xla`` (a process per device) for several.

        On PyTorch/XLA's CPU device several devices get ``xla_spmd`` instead: multi-process
        collectives hang there (pytorch/xla issues 5005 and 9089), SPMD runs them in one process.
        """
        if num_processes <= 1:
            return "single_xla"
        if probe.pjrt_device() == "CPU":
            return "xla_spmd"
        return "xla"
