"""``find_usable_cuda_devices``: pick GPUs that can really allocate memory right now.

On shared machines some GPUs may be in exclusive-process mode and taken by another job, or otherwise
unusable although the driver lists them. Asking for ``devices=2`` would then fail inside a worker;
this helper finds working indices up front, to pass as ``Fabric(devices=find_usable_cuda_devices(2))``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from fabric_cuda import device_count

PROBE_TIMEOUT_S = 120


def run_probe(indices: list[int], want: int) -> tuple[list[int], dict[int, str]]:
    """Try ``indices`` in a fresh Python process; returns the usable ones and why the others failed."""
    command = [sys.executable, "-m", "fabric_cuda._probe", str(want), *map(str, indices)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"Checking which CUDA devices are usable did not finish within {PROBE_TIMEOUT_S} s; a GPU may be hung."
        ) from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"Checking which CUDA devices are usable failed (exit code {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    result = json.loads(lines[-1])
    return [int(i) for i in result["usable"]], {int(k): str(v) for k, v in result["errors"].items()}


def find_usable_cuda_devices(num_devices: int = -1) -> list[int]:
    """Indices of ``num_devices`` GPUs that can allocate memory now (``-1``: all that can).

    Devices that fail (for example an exclusive-process GPU in use by another process) are skipped.
    The check runs in a separate process, so the caller stays free of CUDA and can still fork.
    Raises ``RuntimeError`` naming each failing device and its error when fewer than asked are usable.
    Another process can still take a device between this check and its use.
    """
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < -1:
        raise ValueError(f"num_devices must be -1 (all usable devices) or a count >= 0, got {num_devices!r}.")
    if num_devices == 0:
        return []
    visible = device_count.num_cuda_devices()
    if visible == 0:
        raise RuntimeError(f"find_usable_cuda_devices found no CUDA device: {device_count.unavailable_reason()}.")
    if num_devices > visible:
        raise RuntimeError(
            f"find_usable_cuda_devices({num_devices}) asks for more GPUs than the {visible} visible to this process."
        )
    want = visible if num_devices == -1 else num_devices
    usable, errors = run_probe(list(range(visible)), want)
    needed = 1 if num_devices == -1 else num_devices
    if len(usable) < needed:
        reasons = "; ".join(f"cuda:{i}: {message}" for i, message in sorted(errors.items())) or "no errors reported"
        asked = "any" if num_devices == -1 else str(num_devices)
        raise RuntimeError(
            f"find_usable_cuda_devices wanted {asked} usable GPU(s) of the {visible} visible, but only {len(usable)} "
            f"could allocate memory ({usable}). Failures: {reasons}. GPUs in exclusive-process mode that another "
            "process holds cannot be shared; wait for them or ask for fewer devices."
        )
    return usable
