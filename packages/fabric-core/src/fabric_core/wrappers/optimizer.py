"""``_FabricOptimizer``: steps through the strategy, still an instance of the user's optimizer class."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from torch.optim import Optimizer

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy

# Attributes the wrapper defines itself or forwards live (``load_state_dict`` replaces ``param_groups``
# on the wrapped optimizer, so a copy would go stale); everything else is copied once.
_OWN = ("step", "zero_grad", "state_dict", "load_state_dict", "__del__", "param_groups", "state", "defaults")


class _FabricOptimizer:
    """What ``fabric.setup`` returns for an optimizer.

    Its class is made at wrap time as a subclass of both this class and the user's optimizer class,
    so ``isinstance(opt, torch.optim.SGD)`` holds. ``param_groups``, ``state`` and ``defaults`` are
    read from the wrapped optimizer every time, so an LR scheduler built on either one sees the same
    learning rates, also after ``load_state_dict``.
    """

    def __init__(self, optimizer: Optimizer, strategy: Strategy, callbacks: list[Any] | None = None) -> None:
        self.__dict__ = {k: v for k, v in optimizer.__dict__.items() if k not in _OWN}
        self.__class__ = type("Fabric" + type(optimizer).__name__, (self.__class__, type(optimizer)), {})
        self._optimizer = optimizer
        self._strategy = strategy
        self._callbacks = [c for c in callbacks or [] if callable(getattr(c, "on_after_optimizer_step", None))]
        # Fast path: where nothing stands between the user and the optimizer, call it directly. zero_grad always
        # is the optimizer's own (an engine that owns the gradients hands back an optimizer whose zero_grad is its).
        from fabric_core.plugins.strategy import Strategy

        self.zero_grad = optimizer.zero_grad  # type: ignore[method-assign]
        if (
            getattr(type(strategy), "optimizer_step", None) is Strategy.optimizer_step
            and strategy.precision.plain_backward_and_step
            and not strategy.requires_fabric_backward()
            and not self._callbacks
        ):
            self.step = optimizer.step  # type: ignore[method-assign]
        # fabric.accumulate finds the wrapper from the optimizer Fabric recorded at set-up.
        optimizer.__dict__["_fabric_wrapper"] = weakref.ref(self)

    @contextmanager
    def _held(self, step: bool = True) -> Iterator[None]:
        """Make ``zero_grad`` (and ``step`` unless ``step=False``) no-ops while open.

        Used inside a ``fabric.accumulate`` window before its last micro-step; the methods are
        swapped on this instance only, so nothing is checked on the normal step path.
        """
        names = ("step", "zero_grad") if step else ("zero_grad",)
        saved = {name: self.__dict__[name] for name in names if name in self.__dict__}
        for name in names:
            self.__dict__[name] = _skip
        try:
            yield
        finally:
            for name in names:
                if name in saved:
                    self.__dict__[name] = saved[name]
                else:
                    self.__dict__.pop(name, None)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self._optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self._optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:
        return self._optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._optimizer.defaults = value

    @property
    def optimizer(self) -> Optimizer:
        """The user's optimizer."""
        return self._optimizer

    def step(self, closure: Any = None) -> Any:
        """Step through the strategy (which may skip it, e.g. on a float16 overflow)."""
        kwargs = {} if closure is None else {"closure": closure}
        strategy = self._strategy
        strategy.in_fabric_step = True
        try:
            output = strategy.optimizer_step(self._optimizer, **kwargs)
        finally:
            strategy.in_fabric_step = False
        for callback in self._callbacks:
            callback.on_after_optimizer_step(strategy=self._strategy, optimizer=self._optimizer)
        return output

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self._strategy.get_optimizer_state(self._optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._strategy.load_optimizer_state(self._optimizer, state_dict)

    def __repr__(self) -> str:
        return f"_FabricOptimizer({self._optimizer!r})"


def _skip(*args: Any, **kwargs: Any) -> None:
    """``step``/``zero_grad`` on a micro-step that is not the last of its accumulation window."""
    return None
