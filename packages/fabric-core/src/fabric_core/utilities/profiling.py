"""``with fabric.profile() as prof:`` over ``torch.profiler``, writing one trace per rank.

Traces are written by ``torch.profiler.tensorboard_trace_handler`` as ``rank<N>.<time>.pt.trace.json``:
Chrome trace-event JSON, which chrome://tracing and Perfetto open and TensorBoard's PyTorch
profiler plugin reads from the log folder. The folder is ``output_dir``, else the first logger's
``log_dir`` (or ``root_dir``), else ``./fabric_profiles`` under the working directory (said in a
log line, since nobody asked for it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.profiler

    from fabric_core.fabric import Fabric

log = logging.getLogger(__name__)

DEFAULT_FOLDER = "fabric_profiles"
_SCHEDULE_KEYS = ("wait", "warmup", "active", "repeat", "skip_first")


def trace_folder(fabric: Fabric, output_dir: str | Path | None) -> Path:
    """Where the traces go (see the module docstring)."""
    if output_dir is not None:
        return Path(output_dir)
    if fabric.loggers:
        first = fabric.loggers[0]
        for attribute in ("log_dir", "root_dir"):
            folder = getattr(first, attribute, None)
            if folder:
                return Path(folder)
    folder = Path.cwd() / DEFAULT_FOLDER
    if fabric.is_global_zero:
        log.warning("fabric.profile: no output_dir and no logger folder; writing traces to %s", folder)
    return folder


def make_schedule(schedule: Mapping[str, int] | Callable[[int], Any] | None) -> Callable[[int], Any] | None:
    """A ``torch.profiler.schedule`` from a dict of its arguments (a callable is used as it is)."""
    if schedule is None or callable(schedule):
        return schedule
    if not isinstance(schedule, Mapping):
        raise TypeError(
            f"schedule must be a dict of {', '.join(_SCHEDULE_KEYS)} or a torch.profiler.schedule, got {schedule!r}."
        )
    unknown = sorted(set(schedule) - set(_SCHEDULE_KEYS))
    if unknown:
        raise ValueError(f"schedule got unknown keys {unknown}; it takes {', '.join(_SCHEDULE_KEYS)}.")
    import torch.profiler

    arguments = {"wait": 0, "warmup": 0, "active": 1, **schedule}
    return torch.profiler.schedule(**arguments)


def _activities(device_type: str) -> list[Any]:
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU]
    extra = {"cuda": "CUDA", "xpu": "XPU"}.get(device_type)
    if extra is not None and hasattr(ProfilerActivity, extra):
        activities.append(getattr(ProfilerActivity, extra))
    return activities


@contextmanager
def profile(
    fabric: Fabric,
    schedule: Mapping[str, int] | Callable[[int], Any] | None = None,
    output_dir: str | Path | None = None,
    **profiler_kwargs: Any,
) -> Iterator[torch.profiler.profile]:
    """The implementation of ``Fabric.profile``."""
    import torch.profiler

    folder = trace_folder(fabric, output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    profiler_kwargs.setdefault("activities", _activities(fabric.device.type))
    handler = torch.profiler.tensorboard_trace_handler(str(folder), worker_name=f"rank{fabric.global_rank}")
    with torch.profiler.profile(schedule=make_schedule(schedule), on_trace_ready=handler, **profiler_kwargs) as prof:
        yield prof
