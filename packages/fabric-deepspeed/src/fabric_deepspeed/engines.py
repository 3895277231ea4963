"""Which DeepSpeed engine belongs to a module or optimizer (one engine per ``fabric.setup`` call)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fabric_core.errors import MisconfigurationError


@dataclass
class EngineRecord:
    engine: Any
    optimizer: Any  # the view fabric.setup returned (None for an engine without optimizer)
    user_optimizer: Any  # the optimizer the user passed in
    scheduler: Any


class EngineRegistry:
    """The engines one strategy built, found by the objects users hold (wrapped module, optimizer)."""

    def __init__(self) -> None:
        self._records: list[EngineRecord] = []
        self.trainable: list[Any] = []  # engines set up with an optimizer, in order (read on every backward)

    @property
    def engines(self) -> list[Any]:
        return [r.engine for r in self._records]

    def add(self, engine: Any, optimizer: Any, user_optimizer: Any, scheduler: Any) -> None:
        self._records.append(EngineRecord(engine, optimizer, user_optimizer, scheduler))
        if optimizer is not None:
            self.trainable.append(engine)

    def record_of(self, engine: Any) -> EngineRecord:
        for record in self._records:
            if record.engine is engine:
                return record
        raise KeyError("engine not registered")

    def find_for_module(self, obj: Any) -> Any | None:
        """The engine behind ``obj``: a module returned by ``fabric.setup``, the engine, or the user's module."""
        from fabric_core.plugins.wrapped import strategy_module

        obj = strategy_module(obj) if obj is not None else None
        for record in self._records:
            if obj is record.engine or obj is getattr(record.engine, "module", None):
                return record.engine
        return None

    def find_for_optimizer(self, optimizer: Any) -> Any | None:
        from fabric_core.plugins.wrapped import inner_optimizer

        optimizer = inner_optimizer(optimizer)
        for record in self._records:
            if record.optimizer is None:
                continue
            if (
                optimizer is record.optimizer
                or optimizer is record.user_optimizer
                or optimizer is record.engine.optimizer
            ):
                return record.engine
        return None

    def for_optimizer(self, optimizer: Any) -> Any:
        engine = self.find_for_optimizer(optimizer)
        if engine is None:
            raise MisconfigurationError(
                "This optimizer was not set up together with a model by this Fabric's DeepSpeed strategy: "
                "use model, optimizer = fabric.setup(model, optimizer)."
            )
        return engine

    def for_backward(self, module: Any) -> Any:
        """The engine ``fabric.backward`` runs through; ``model=`` is needed once several can train."""
        if module is not None:
            engine = self.find_for_module(module)
            if engine is None:
                raise MisconfigurationError(
                    "fabric.backward(loss, model=...) got a model that was not set up by this Fabric's DeepSpeed strategy; "
                    "pass the module returned by fabric.setup."
                )
            if engine.optimizer is None:
                raise MisconfigurationError(
                    "fabric.backward(loss, model=...) got a model set up without an optimizer; it cannot train."
                )
            return engine
        trainable = self.trainable
        if len(trainable) == 1:
            return trainable[0]
        if not trainable:
            raise MisconfigurationError(
                "fabric.backward needs a model set up with its optimizer: model, optimizer = fabric.setup(model, optimizer)."
            )
        raise MisconfigurationError(
            f"{len(trainable)} models were set up with DeepSpeed, each in its own engine: tell fabric.backward which one "
            "the loss belongs to with fabric.backward(loss, model=model)."
        )

    def engines_in_state(self, state: Any) -> list[tuple[str, Any]]:
        """``(key, engine)`` for each entry of a ``fabric.save``/``fabric.load`` state that is a DeepSpeed model."""
        if not isinstance(state, Mapping):
            return []
        found = []
        for key, value in state.items():
            engine = self.find_for_module(value) if _is_module(value) else None
            if engine is not None:
                found.append((key, engine))
        return found

    def destroy_all(self) -> None:
        for record in self._records:
            destroy = getattr(record.engine, "destroy", None)
            if callable(destroy):
                destroy()
        self._records.clear()
        self.trainable.clear()


def _is_module(value: Any) -> bool:
    from torch.nn import Module

    return isinstance(value, Module)
