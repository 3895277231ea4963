"""The Accelerator interface: what a hardware backend must tell Fabric about its devices."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from fabric_core.plugins.precision import Precision


class Accelerator(ABC):
    """A kind of device (CPU, CUDA GPU, TPU) that Fabric places modules and tensors on.

    Contract for backend authors:

    - ``name`` is the registry name users pass as ``Fabric(accelerator=...)``.
    - ``auto_select_priority()`` orders accelerators for ``accelerator="auto"``: the one with the
      highest priority wins (CPU is 0, so any real accelerator beats it); ``None`` keeps "auto" away.
    - ``check_precision`` refuses a precision this device cannot run, naming the ones it can.
    - ``is_available`` and ``auto_device_count`` must be cheap and must not initialise the device
      runtime in the calling process (so that forking child processes stays safe).
    - ``parse_devices`` turns the user's ``devices`` argument into a list of device indices and
      raises ``ValueError`` listing valid forms when it cannot.
    """

    name: ClassVar[str] = ""

    @staticmethod
    @abstractmethod
    def is_available() -> bool:
        """Whether this machine has at least one usable device of this kind."""

    @classmethod
    def auto_select_priority(cls) -> int | None:
        """Priority for ``accelerator="auto"``, or ``None`` when "auto" must not pick this accelerator.

        Defaults to 0 (the CPU's) where available. A backend that can run on an emulated device
        (XLA on the CPU) returns ``None`` there while still accepting an explicit request.
        """
        return 0 if cls.is_available() else None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why ``is_available()`` is False (shown to the user), or ``None`` when there is nothing to add."""
        return None

    @staticmethod
    @abstractmethod
    def auto_device_count() -> int:
        """How many devices ``devices="auto"`` should use."""

    @classmethod
    @abstractmethod
    def parse_devices(cls, devices: Any) -> list[int]:
        """Turn ``devices`` (int, -1, "auto", "0,1", list) into the device indices to use."""

    @abstractmethod
    def get_device(self, index: int) -> torch.device:
        """The ``torch.device`` for the device index this process drives."""

    def setup_device(self, device: torch.device) -> None:
        """Prepare ``device`` for use by this process (for example select it as current)."""

    def teardown(self) -> None:
        """Release whatever ``setup_device`` acquired."""

    def default_process_group_backend(self) -> str:
        """The ``torch.distributed`` backend for collectives between devices of this kind."""
        return "gloo"

    def check_precision(self, precision: str) -> None:
        """Raise ``MisconfigurationError`` when ``precision`` cannot run here, saying what can (default: all run)."""

    def create_precision(self, precision: str) -> Precision | None:
        """An accelerator-specific implementation of ``precision`` (a CUDA grad scaler), or ``None``.

        ``None`` lets plan resolution take the implementation registered under the name.
        """
        return None

    def auto_strategy(self, num_processes: int) -> str:
        """The strategy name ``strategy="auto"`` resolves to for ``num_processes`` devices in total."""
        return "ddp" if num_processes > 1 else "single_device"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
