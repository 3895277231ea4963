"""One XLA device in one process."""

from __future__ import annotations

import torch

from fabric_xla.strategies.base import XLAStrategyBase


class SingleXLAStrategy(XLAStrategyBase):
    """Trains on one XLA device (a TPU core, or ``xla:i`` of PyTorch/XLA's CPU device)."""

    name = "single_xla"

    def __init__(self, device: torch.device | str | int | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if isinstance(device, int):
            device = torch.device("xla", device)
        self._device = torch.device(device) if device is not None else None

    @property
    def root_device(self) -> torch.device:
        if self._device is not None:
            return self._device
        if self.parallel_devices:
            return self.parallel_devices[0]
        return torch.device("xla", 0)

    def setup_environment(self) -> None:
        super().setup_environment()
        import torch_xla

        # Make it the default device, on which torch_xla.sync() executes the pending graph.
        torch_xla.device(self.root_device.index or 0)
