"""Cheap facts about PyTorch/XLA and TPUs that never import torch_xla or start its runtime.

Plan resolution runs in the parent process before workers are started; touching the XLA runtime
there would make ``xmp.spawn`` refuse to start ("Runtime is already initialized"). So everything here
reads package metadata, environment variables and sysfs only.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from importlib import metadata

from packaging.version import InvalidVersion, Version

#: The torch / torch_xla pair this package is tested with (torch_xla X.Y needs torch X.Y).
TESTED_TORCH = "2.9.0"
TESTED_TORCH_XLA = "2.9.0"
INSTALL_COMMAND = f"pip install torch=={TESTED_TORCH} torch_xla=={TESTED_TORCH_XLA}"
TPU_INSTALL_COMMAND = f"pip install torch=={TESTED_TORCH} 'torch_xla[tpu]=={TESTED_TORCH_XLA}'"

# Google's PCI vendor id and the device ids of TPU chips (public sysfs facts, v2 to v7).
_GOOGLE_VENDOR = "0x1ae0"
_TPU_DEVICE_IDS = {"0x0027": 2, "0x005e": 1, "0x0063": 1, "0x006f": 1, "0x0062": 1, "0x0056": 1, "0x0076": 1}


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def pjrt_device(env: Mapping[str, str] | None = None) -> str | None:
    """The device type PJRT_DEVICE asks for (``"TPU"``, ``"CPU"``, ``"CUDA"``...), or ``None`` when unset."""
    value = _env(env).get("PJRT_DEVICE", "").strip()
    return value.split("_")[0].upper() if value else None


def tpu_chips(sysfs_root: str = "/sys/bus/pci/devices") -> list[int]:
    """XLA devices per TPU chip attached to this host through PCI (empty without TPUs)."""
    chips: list[int] = []
    for vendor_file in glob.glob(os.path.join(sysfs_root, "*", "vendor")):
        try:
            with open(vendor_file) as f:
                if f.read().strip() != _GOOGLE_VENDOR:
                    continue
            with open(os.path.join(os.path.dirname(vendor_file), "device")) as f:
                device_id = f.read().strip()
        except OSError:
            continue
        if device_id in _TPU_DEVICE_IDS:
            chips.append(_TPU_DEVICE_IDS[device_id])
    return chips


def tpu_present(env: Mapping[str, str] | None = None) -> bool:
    """Whether XLA would run on a real TPU: PJRT_DEVICE=TPU, or unset on a host with TPU chips."""
    device = pjrt_device(env)
    if device is not None:
        return device == "TPU"
    return bool(tpu_chips())


def device_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether an XLA device exists for this process: a TPU, or a device type chosen with PJRT_DEVICE."""
    return pjrt_device(env) is not None or bool(tpu_chips())


def local_device_count(env: Mapping[str, str] | None = None) -> int:
    """How many XLA devices this host has, as torch_xla will count them (without starting it)."""
    env = _env(env)
    device = pjrt_device(env) or ("TPU" if tpu_chips() else None)
    if device is None:
        return 0
    override = env.get(f"{device}_NUM_DEVICES") or (env.get("GPU_NUM_DEVICES") if device == "CUDA" else None)
    if override:
        try:
            return max(1, int(override))
        except ValueError:
            return 1
    if device == "TPU":
        return max(1, sum(tpu_chips()))
    return 1


def torch_xla_version() -> str | None:
    """The installed torch_xla distribution's version, from metadata only."""
    for name in ("torch_xla", "torch-xla"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _release(version: str) -> tuple[int, ...] | None:
    try:
        return Version(version).release[:2]
    except InvalidVersion:
        return None


def installation_problem() -> str | None:
    """Why torch_xla cannot load beside the installed torch, or ``None`` when the pair looks right."""
    import torch

    return describe_installation(torch.__version__, torch_xla_version())


def describe_installation(torch_version: str, xla_version: str | None) -> str | None:
    """The problem with this torch / torch_xla pair (missing, or built for another torch), or ``None``."""
    if xla_version is None:
        return (
            f"PyTorch/XLA (the torch_xla package) is not installed, so Fabric cannot use an XLA device (TPU). "
            f"Each torch_xla release works only with the torch release of the same version (installed: torch "
            f"{torch_version}). Install the pair fabric-xla is tested with: {INSTALL_COMMAND} "
            f"(on a TPU VM: {TPU_INSTALL_COMMAND}, or pip install 'fabric-xla[tpu]')."
        )
    xla_release = _release(xla_version)
    if xla_release is None or xla_release != _release(torch_version):
        wanted = ".".join(str(n) for n in xla_release) + ".*" if xla_release else "of the same version"
        return (
            f"torch_xla {xla_version} needs torch {wanted}, but torch {torch_version} is installed (loading it "
            f"would fail with an undefined symbol in torch_xla._XLAC). Install a matching pair, for example: "
            f"{INSTALL_COMMAND}"
        )
    return None
