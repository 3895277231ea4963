"""Counting GPUs without initialising CUDA in the calling process.

``torch.cuda.is_available()`` calls ``cudaGetDeviceCount``, which initialises the CUDA driver; a
process forked after that cannot use CUDA. Fabric decides its plan (and may fork workers) before any
GPU work starts, so the count comes from NVML (the driver's management library, through the
``nvidia-ml-py`` bindings), which leaves CUDA untouched. Only when NVML cannot answer does the count
come from ``torch.cuda.device_count()``, which tries NVML itself and then falls back to the runtime.
"""

from __future__ import annotations

import os

from fabric_cuda.visible_devices import count_visible_devices, names_mig_devices, visible_device_entries


def torch_has_cuda() -> bool:
    """Whether the installed torch was built with CUDA (a CPU-only build can never use a GPU)."""
    import torch

    return bool(torch.backends.cuda.is_built())


def _torch_is_rocm() -> bool:
    import torch

    return torch.version.hip is not None


def nvml_device_uuids() -> list[str] | None:
    """The UUIDs of every GPU the driver knows, in NVML order; ``None`` when NVML cannot be used."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        uuids = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
            uuids.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return uuids
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _torch_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def _cuda_initialized() -> bool:
    import torch

    return torch.cuda.is_initialized()


def num_cuda_devices() -> int:
    """How many GPUs this process can use, honouring ``CUDA_VISIBLE_DEVICES``; initialises nothing."""
    if not torch_has_cuda():
        return 0
    if _cuda_initialized() or _torch_is_rocm():
        # An initialised runtime has fixed its device list: asking it is cheap and authoritative. On
        # ROCm builds torch counts through AMD's management library, which NVML cannot replace.
        return _torch_device_count()
    entries = visible_device_entries(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if names_mig_devices(entries):
        return _torch_device_count()
    uuids = nvml_device_uuids()
    if uuids is None:
        return _torch_device_count()
    return count_visible_devices(entries, uuids)


def is_cuda_available() -> bool:
    """Whether at least one GPU can be used; cheap, and leaves CUDA uninitialised."""
    return num_cuda_devices() > 0


def unavailable_reason() -> str:
    """Why no GPU can be used here, phrased as what to do about it."""
    if not torch_has_cuda():
        import torch

        return (
            f"the installed torch {torch.__version__} is a CPU-only build; install a CUDA build of torch "
            "to use NVIDIA GPUs"
        )
    if _torch_is_rocm():
        return "ROCm reports no AMD GPU"
    uuids = nvml_device_uuids()
    if uuids is None:
        return "no NVIDIA driver was found (the NVML library could not be loaded or initialised)"
    if not uuids:
        return "the NVIDIA driver reports no GPU"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides all {len(uuids)} GPU(s) the driver reports"
    return f"the driver reports {len(uuids)} GPU(s), but the CUDA runtime reports none"
