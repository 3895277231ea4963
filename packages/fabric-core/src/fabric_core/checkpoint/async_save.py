"""Background checkpoint writes: ``fabric.save(..., async_=True)`` returns before the bytes are written.

The state is snapshotted first (every tensor copied to CPU memory), so training may go on changing
the parameters while a single background thread writes the snapshot. The write itself is the
ordinary atomic one, so a crash at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

_ATTRIBUTE = "_fabric_async_writer"
_THREAD_PREFIX = "fabric-checkpoint-writer"


def snapshot(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``checkpoint`` whose tensors no longer share memory with the live model and optimizer."""
    from fabric_core.utilities.apply_func import apply_to_tensors

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to("cpu", copy=True)

    return apply_to_tensors(checkpoint, copy)


def finished(result: Any = None) -> Future:
    """A future that is already done (what ranks that write nothing return)."""
    future: Future = Future()
    future.set_result(result)
    return future


def submit(owner: object, job: Callable[[], Any]) -> Future:
    """Run ``job`` on ``owner``'s single writer thread (created on first use); jobs run in order."""
    executor = getattr(owner, _ATTRIBUTE, None)
    if executor is None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_PREFIX)
        setattr(owner, _ATTRIBUTE, executor)
    return executor.submit(job)


def wait(owner: object) -> None:
    """Block until every background write of ``owner`` has finished (their errors stay on their futures)."""
    executor = getattr(owner, _ATTRIBUTE, None)
    if executor is not None and not threading.current_thread().name.startswith(_THREAD_PREFIX):
        executor.submit(lambda: None).result()


def shutdown(owner: object) -> None:
    """Finish pending writes and stop ``owner``'s writer thread."""
    executor = getattr(owner, _ATTRIBUTE, None)
    if executor is not None:
        executor.shutdown(wait=True)
        setattr(owner, _ATTRIBUTE, None)
