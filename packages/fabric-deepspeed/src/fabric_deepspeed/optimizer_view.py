"""The optimizer ``fabric.setup`` hands back under DeepSpeed: the user's optimizer, driven by the engine.

ZeRO keeps the user's torch optimizer inside its own and points its parameter groups at the float32
shards. Calling that optimizer's own ``zero_grad`` would drop the gradient buffers ZeRO-Offload keeps
on those shards, and its ``step`` would bypass the engine. So setup returns a *view*: a second object
sharing the user's optimizer's attribute dictionary (``param_groups``, ``state``, learning rates, so LR
schedulers built on either see the same numbers), of a subclass of the user's optimizer class (so
``isinstance(opt, torch.optim.AdamW)`` holds), whose ``step`` and ``zero_grad`` go to the engine.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer


class _EngineDriven:
    """Mixin placed before the user's optimizer class in the view's class."""

    _fabric_engine: Any = None

    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ValueError("DeepSpeed's optimizer step takes no closure; call optimizer.step() without arguments.")
        self._fabric_engine.step()
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._fabric_engine.optimizer.zero_grad(set_to_none=set_to_none)

    def load_state_dict(self, state_dict: Any) -> None:
        raise RuntimeError(
            "Under DeepSpeed the optimizer state is sharded across processes; restore it with "
            "fabric.load(path, {'model': model, 'optimizer': optimizer}) from a checkpoint written by fabric.save."
        )


def engine_optimizer_view(optimizer: Optimizer, engine: Any) -> Optimizer:
    """A view of ``optimizer`` whose step and zero_grad run through ``engine``."""
    cls = type(optimizer)
    view_cls = type(
        f"DeepSpeed{cls.__name__}", (_EngineDriven, cls), {"_fabric_engine": engine, "__module__": __name__}
    )
    view: Any = object.__new__(view_cls)
    view.__dict__ = optimizer.__dict__  # the same dict object: nothing can drift apart
    return view


def engine_of_view(view: Any) -> Any:
    """The engine behind a view made by ``engine_optimizer_view`` (``None`` for other objects)."""
    return getattr(type(view), "_fabric_engine", None) if isinstance(view, _EngineDriven) else None


def refuse_raw_step(engine: Any, strategy_name: str, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    """Step pre-hook on the user's optimizer: only the engine's own step may step it.

    Stepping the optimizer passed to ``fabric.setup`` directly would bypass ZeRO (its parameter
    groups point at the engine's shards, whose gradients only the engine fills).
    """
    if not getattr(engine, "_running_engine_step", True):  # DeepSpeed sets it while engine.step() runs
        raise RuntimeError(
            "optimizer.step() was called on the optimizer you passed to fabric.setup, not on the one it returned. With "
            f"strategy {strategy_name!r} that would skip the DeepSpeed engine: use the optimizer returned by fabric.setup."
        )
