"""How many GPUs ``CUDA_VISIBLE_DEVICES`` leaves visible, given what the driver (NVML) reports.

Pure functions, so that the rules can be tested without a GPU. They follow the CUDA runtime's
documented behaviour: entries are ordinals or (prefixes of) ``GPU-`` UUIDs, the list ends at the
first entry that names no device, and a device named twice makes the whole list invalid.
"""

from __future__ import annotations

from collections.abc import Sequence


def visible_device_entries(value: str | None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES``; ``None`` when the variable is unset (every GPU is visible)."""
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",")]


def names_mig_devices(entries: Sequence[str] | None) -> bool:
    """Whether ``entries`` name MIG instances, which NVML's device list does not enumerate."""
    return bool(entries) and any(entry.startswith("MIG-") for entry in entries or ())


def _leading_ordinal(entry: str) -> int | None:
    """The integer an entry starts with (the runtime reads ``"1gpu"`` as 1), or ``None``."""
    digits = ""
    for position, char in enumerate(entry):
        if char.isdigit() or (position == 0 and char in "+-"):
            digits += char
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return None


def _uuid_ordinal(entry: str, uuids: Sequence[str]) -> int | None:
    """The ordinal of the one device whose UUID starts with ``entry``; ``None`` if none or several match."""
    matches = [index for index, uuid in enumerate(uuids) if uuid.startswith(entry)]
    return matches[0] if len(matches) == 1 else None


def count_visible_devices(entries: Sequence[str] | None, uuids: Sequence[str]) -> int:
    """How many of the devices with NVML ``uuids`` the CUDA runtime will expose under ``entries``."""
    if entries is None:
        return len(uuids)
    chosen: list[int] = []
    for entry in entries:
        ordinal = _uuid_ordinal(entry, uuids) if entry.startswith("GPU-") else _leading_ordinal(entry)
        if ordinal is None or not 0 <= ordinal < len(uuids):
            break  # the runtime ignores this entry and everything after it
        if ordinal in chosen:
            return 0  # a repeated device invalidates the whole list
        chosen.append(ordinal)
    return len(chosen)
