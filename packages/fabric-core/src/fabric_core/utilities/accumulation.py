"""Gradient accumulation: ``with fabric.accumulate(model, steps=N):`` around each micro-step.

A *window* is N micro-steps (fewer at the end of an epoch). On every micro-step but the window's
last, gradient synchronisation is skipped (the strategy's ``no_backward_sync``) and the optimizer
wrapper's ``step``/``zero_grad`` do nothing. Each loss is scaled by ``1/len(window)``, so the
gradients summed over a window equal those of one batch holding all its micro-batches (a mean loss
over equal-sized micro-batches). The last window of an epoch is shorter when N does not divide the
number of batches; its length must be known when it starts, from the Fabric dataloader being
iterated (``dataloader=``) or from the caller (``remaining=``). Without either, windows are always
N long and an unfinished one carries over to the next epoch.

A strategy that runs its own accumulation (a DeepSpeed engine counting micro-batches) takes over
through an optional method ``accumulation_step(module, steps, window, boundary)`` returning a context
manager that yields ``(loss_scale, hold_step)``, or ``None`` for the scheme above.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.wrappers.module import _FabricModule
    from fabric_core.wrappers.optimizer import _FabricOptimizer

_STATE = "_fabric_accumulation"  # the window state, kept in the wrapped module's __dict__


@dataclass
class AccumulationStep:
    """What ``with fabric.accumulate(...) as step`` gives: where this micro-step sits in its window.

    ``boundary`` is ``True`` on the window's last micro-step: gradients are synchronised and the
    optimizer steps. Clip gradients or log the step's loss only then.
    """

    index: int  # 1-based position in the window
    window: int  # how many micro-steps this window has
    boundary: bool


@dataclass
class _Window:
    count: int = 0  # micro-steps done in the current window
    size: int = 0  # its planned length
    optimizers: list[weakref.ref] | None = None
    known_optimizers: int = -1  # how many optimizers Fabric had set up when ``optimizers`` was computed


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"fabric.accumulate: {name} must be an int >= 1, got {value!r}.")
    return value


def _position(dataloader: Any, steps: int) -> tuple[int, int]:
    """(index in window, window length) of the batch the Fabric dataloader ``dataloader`` last yielded."""
    position = getattr(dataloader, "position", None)
    if not callable(position):
        raise TypeError(
            "fabric.accumulate(dataloader=...) takes the loader returned by fabric.setup_dataloaders; for another "
            "iterable pass remaining=<micro-batches left in the epoch, this one included> instead."
        )
    batches = int(position()["batches"])
    try:
        length = len(dataloader)
    except TypeError:
        raise TypeError(
            "fabric.accumulate(dataloader=...) needs a loader with a length to know where the epoch ends; "
            "pass remaining=... yourself for an iterable dataset."
        ) from None
    if not 1 <= batches <= length:
        raise RuntimeError(
            f"fabric.accumulate(dataloader=...) got a loader that is not being iterated (it has yielded {batches} of "
            f"{length} batches this epoch): pass the loader your loop takes the current batch from."
        )
    start = (batches - 1) // steps * steps + 1
    return batches - start + 1, min(steps, length - start + 1)


def _optimizers_of(fabric: Fabric, module: _FabricModule, state: _Window) -> list[_FabricOptimizer]:
    """The optimizer wrappers holding ``module``'s parameters (all of this Fabric's when none share any)."""
    inner = list(fabric._set_up_optimizers)
    if state.optimizers is None or state.known_optimizers != len(inner):
        wrappers = [w for w in (getattr(o, "__dict__", {}).get("_fabric_wrapper") for o in inner) if w is not None]
        params = {id(p) for p in module.parameters()}
        mine = [
            w
            for w in wrappers
            if (opt := w()) is not None and any(id(p) in params for g in opt.param_groups for p in g["params"])
        ]
        state.optimizers = mine or wrappers
        state.known_optimizers = len(inner)
    return [opt for ref in state.optimizers if (opt := ref()) is not None]


@contextmanager
def accumulate(
    fabric: Fabric, module: _FabricModule, steps: int, dataloader: Any = None, remaining: int | None = None
) -> Iterator[AccumulationStep]:
    """The implementation of ``Fabric.accumulate`` (see the module docstring)."""
    from fabric_core.wrappers.module import _FabricModule

    if not isinstance(module, _FabricModule):
        raise TypeError("fabric.accumulate expects the module returned by fabric.setup.")
    _check_positive("steps", steps)
    if dataloader is not None and remaining is not None:
        raise ValueError("fabric.accumulate takes dataloader= or remaining=, not both.")
    if remaining is not None:
        _check_positive("remaining", remaining)
    if "backward" in fabric.__dict__:
        raise RuntimeError("fabric.accumulate contexts cannot be nested; open one per micro-step.")
    state: _Window = module.__dict__.setdefault(_STATE, _Window())
    if dataloader is not None:
        index, size = _position(dataloader, steps)
    else:
        if state.count == 0 or state.count >= state.size:
            state.count = 0
            state.size = steps if remaining is None else min(steps, remaining)
        index, size = state.count + 1, state.size
    boundary = index >= size
    state.count, state.size = (0, size) if boundary else (index, size)

    strategy = fabric.strategy
    forward_module = module._forward_module
    takeover = getattr(strategy, "accumulation_step", None)
    plan = takeover(forward_module, steps, size, boundary) if callable(takeover) else None
    with ExitStack() as stack:
        if plan is None:
            loss_scale, hold_step = 1.0 / size, True
            if not boundary and strategy.supports_no_backward_sync:
                stack.enter_context(strategy.no_backward_sync(forward_module, True))
        else:
            loss_scale, hold_step = stack.enter_context(plan)
        if not boundary:
            for optimizer in _optimizers_of(fabric, module, state):
                stack.enter_context(optimizer._held(step=hold_step))
        if loss_scale != 1.0:
            stack.enter_context(_scaled_backward(fabric, loss_scale))
        yield AccumulationStep(index=index, window=size, boundary=boundary)


@contextmanager
def _scaled_backward(fabric: Fabric, scale: float) -> Iterator[None]:
    """``fabric.backward(loss)`` back-propagates ``loss * scale`` while open (this instance only)."""
    backward = fabric.backward

    def scaled(tensor: Any, *args: Any, **kwargs: Any) -> None:
        backward(tensor * scale, *args, **kwargs)

    fabric.__dict__["backward"] = scaled
    try:
        yield
    finally:
        fabric.__dict__.pop("backward", None)
