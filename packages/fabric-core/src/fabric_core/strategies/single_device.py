"""One process, one device: no wrapping, no communication."""

from __future__ import annotations

import torch

from fabric_core.plugins.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    """Runs the user's module as it is on one device."""

    name = "single_device"

    def __init__(self, device: torch.device | str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._device = torch.device(device) if device is not None else None

    @property
    def root_device(self) -> torch.device:
        if self._device is not None:
            return self._device
        if self.parallel_devices:
            return self.parallel_devices[0]
        return torch.device("cpu")
