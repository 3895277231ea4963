"""Turning the many forms users write ``devices`` in into a list of device indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fabric_core.errors import MisconfigurationError

#: Upper bound on processes per machine where the hardware sets none (CPU): beyond it is a typo.
MAX_PROCESSES = 4096
VALID_FORMS = (
    'a positive int (number of devices), -1 (all devices), "auto", a numeric string ("2", "-1"), '
    'a comma-separated index string ("0,1") or a list of indices ([0, 1])'
)


def parse_device_indices(devices: Any, available: int | None, kind: str) -> list[int]:
    """Return the device indices ``devices`` asks for; ``available=None`` means unlimited (CPU processes).

    ``"auto"`` is resolved by the accelerator before this is called.
    """

    def fail(reason: str) -> MisconfigurationError:
        return MisconfigurationError(
            f"devices={devices!r} is not valid for {kind}: {reason}. Valid forms: {VALID_FORMS}."
        )

    if isinstance(devices, bool):
        raise fail("a bool is not a device count")
    if isinstance(devices, str):
        text = devices.strip()
        if "," in text:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(p.isdigit() for p in parts):
                raise fail("the comma-separated form takes non-negative integers")
            return _check_indices([int(p) for p in parts], available, fail)
        try:
            devices = int(text)
        except ValueError:
            raise fail("not a number") from None
    if isinstance(devices, int):
        if devices == -1:
            if available is None:
                import os

                return list(range(os.cpu_count() or 1))
            if available == 0:
                raise fail(f"no {kind} device is available")
            return list(range(available))
        if devices <= 0:
            raise fail("the count must be positive, or -1 for all devices")
        if available is None and devices > MAX_PROCESSES:
            raise fail(f"more than {MAX_PROCESSES} processes per machine is not supported")
        if available is not None and devices > available:
            raise fail(f"only {available} device(s) are available")
        return list(range(devices))
    if isinstance(devices, Sequence):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
            raise fail("a list must hold at least one integer index")
        return _check_indices(list(devices), available, fail)
    raise fail(f"type {type(devices).__name__} is not accepted")


def _check_indices(indices: list[int], available: int | None, fail: Any) -> list[int]:
    if len(set(indices)) != len(indices):
        raise fail("indices repeat")
    if any(i < 0 for i in indices):
        raise fail("indices must be non-negative")
    if available is None and (len(indices) > MAX_PROCESSES or max(indices) >= 2**31):
        raise fail(f"more than {MAX_PROCESSES} processes per machine is not supported")
    if available is not None and any(i >= available for i in indices):
        raise fail(f"only indices 0..{available - 1} exist")
    return indices
