"""``@find_executable_batch_size``: retry a function with a smaller batch size after running out of memory.

Accelerate's calling convention: the decorated function takes ``batch_size`` as its first parameter
and is called without it. Like Accelerate's default, each out-of-memory error halves the batch
size (``reduce_batch_size`` changes that, e.g. ``lambda b: int(b * 0.9)``). Before the next try the
garbage collector runs and the device caches are emptied, after the failed try's traceback is
released (its frames hold the tensors that filled the memory).

The search runs in each process on its own: in a multi-process job a rank that runs out of memory
retries while the others may wait in a collective. Find the size in one process, then launch.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

log = logging.getLogger(__name__)

R = TypeVar("R")

# Messages of out-of-memory errors raised as plain RuntimeErrors (older torch, cuDNN, XLA, CPU allocator).
_OOM_MESSAGES = (
    "out of memory",  # "CUDA out of memory.", "CUDA error: out of memory", "XPU out of memory", "MPS backend out of memory"
    "cudnn_status_not_supported",  # cuDNN's usual symptom of a workspace that no longer fits
    "cudnn_status_alloc_failed",
    "resource_exhausted",  # XLA / PJRT: "RESOURCE_EXHAUSTED: Out of memory while trying to allocate ..."
    "defaultcpuallocator: can't allocate memory",
    "can't allocate memory",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means the device or host ran out of memory (then a smaller batch may fit)."""
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    if isinstance(error, RuntimeError):
        message = " ".join(str(arg) for arg in error.args).lower()
        return any(text in message for text in _OOM_MESSAGES)
    return False


def free_memory() -> None:
    """Collect garbage and give cached device memory back, on every accelerator torch has started."""
    import torch

    gc.collect()
    for name in ("cuda", "xpu", "mps"):
        backend = getattr(torch, name, None)
        initialized = getattr(backend, "is_initialized", None)
        started = initialized() if callable(initialized) else bool(backend is not None and backend.is_available())
        if started and backend is not None and hasattr(backend, "empty_cache"):
            backend.empty_cache()


def _halve(batch_size: int) -> int:
    return batch_size // 2


@overload
def find_executable_batch_size(
    function: Callable[..., R], starting_batch_size: int = 128, reduce_batch_size: Callable[[int], int] = _halve
) -> Callable[..., R]: ...


@overload
def find_executable_batch_size(
    function: None = None, starting_batch_size: int = 128, reduce_batch_size: Callable[[int], int] = _halve
) -> Callable[[Callable[..., R]], Callable[..., R]]: ...


def find_executable_batch_size(
    function: Callable[..., R] | None = None,
    starting_batch_size: int = 128,
    reduce_batch_size: Callable[[int], int] = _halve,
) -> Callable[..., R] | Callable[[Callable[..., R]], Callable[..., R]]:
    """Call ``function(batch_size, *args, **kwargs)`` starting at ``starting_batch_size``; on an
    out-of-memory error retry with ``reduce_batch_size(batch_size)`` until it fits.

    Other errors pass through unchanged. Reaching 0 raises ``RuntimeError``. Usable as
    ``@find_executable_batch_size`` or ``@find_executable_batch_size(starting_batch_size=64)``.
    """
    if isinstance(starting_batch_size, bool) or not isinstance(starting_batch_size, int) or starting_batch_size < 1:
        raise ValueError(f"starting_batch_size must be an int >= 1, got {starting_batch_size!r}.")
    if function is None:
        return functools.partial(
            find_executable_batch_size, starting_batch_size=starting_batch_size, reduce_batch_size=reduce_batch_size
        )
    if not callable(function):
        raise TypeError(f"find_executable_batch_size decorates a function, got {function!r}.")
    parameters = list(inspect.signature(function).parameters.values())
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    if not positional and not takes_varargs:
        raise TypeError(f"{function.__name__} must take the batch size as its first parameter.")

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> R:
        if not takes_varargs and len(args) + 1 > len(positional):
            raise TypeError(
                f"{function.__name__} was called with {len(args)} positional argument(s), but its first parameter "
                f"({positional[0].name!r}) is the batch size that find_executable_batch_size passes itself: "
                f"call it without that argument."
            )
        batch_size = starting_batch_size
        while True:
            if batch_size < 1:
                raise RuntimeError(
                    f"find_executable_batch_size: {function.__name__} ran out of memory even with batch size 1 "
                    f"(started at {starting_batch_size}); make the model or the inputs smaller."
                )
            try:
                return function(batch_size, *args, **kwargs)
            except Exception as error:  # MemoryError included
                if not is_out_of_memory(error):
                    raise
                reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            # Out of the except block: the failed try's traceback (and the tensors its frames hold) is released.
            free_memory()
            smaller = reduce_batch_size(batch_size)
            if isinstance(smaller, bool) or not isinstance(smaller, int) or smaller >= batch_size:
                raise ValueError(f"reduce_batch_size must return a smaller int, got {smaller!r} after {batch_size}.")
            log.warning("Out of memory at batch size %d (%s); retrying with %d.", batch_size, reason, smaller)
            batch_size = smaller

    return run
