"""``_FabricModule``: forwards through the strategy's wrapper and the precision plugin."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import Module

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy

# Held in the instance __dict__ (not registered as submodules) so that lookups stay cheap.
_INTERNAL = frozenset(
    (
        "_forward_call",
        "_original_module",
        "_strategy",
        "_forward_methods",
        "_fast_path",
        "_check_backward",
    )
)
#: LightningModule step methods: routed through the strategy's wrapper without being marked (as in Lightning).
STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")
_MISSING = object()


def _compiled_class() -> type | None:
    try:
        from torch._dynamo.eval_frame import OptimizedModule
    except ImportError:  # pragma: no cover - torch builds without dynamo
        return None
    return OptimizedModule


def unwrap_compiled(module: Module) -> Module:
    """The module inside a ``torch.compile`` wrapper (or ``module`` itself)."""
    compiled = _compiled_class()
    while compiled is not None and isinstance(module, compiled):
        module = module._orig_mod  # type: ignore[assignment]
    return module


def unwrap_module(module: Module) -> Module:
    """The user's own module inside Fabric's and ``torch.compile``'s wrappers."""
    module = unwrap_compiled(module)
    if isinstance(module, _FabricModule):
        module = module._original_module
    return unwrap_compiled(module)


class _FabricModule(Module):
    """What ``fabric.setup`` returns for a module.

    ``forward`` goes through the strategy's wrapper (DDP, FSDP, an engine) and the precision
    plugin; ``state_dict`` and attribute access go to the user's module, so checkpoint keys carry no
    wrapper prefix. Methods named with ``mark_forward_method`` also go through the wrapper, and so do
    ``training_step``/``validation_step``/``test_step``/``predict_step`` where the module defines them.
    Any other method that runs submodules while a wrapper is in place raises, since it would bypass
    gradient synchronisation or sharding. ``device`` and ``dtype`` describe the user's module.
    """

    def __init__(self, forward_module: Module, strategy: Strategy, original_module: Module | None = None) -> None:
        super().__init__()
        self._forward_module = forward_module
        object.__setattr__(self, "_forward_call", forward_module)
        object.__setattr__(self, "_original_module", original_module if original_module is not None else forward_module)
        object.__setattr__(self, "_strategy", strategy)
        object.__setattr__(self, "_forward_methods", set(STEP_METHODS))
        check_backward = strategy.requires_fabric_backward()
        object.__setattr__(self, "_check_backward", check_backward)
        object.__setattr__(self, "_fast_path", strategy.precision.is_identity and not check_backward)

    @property
    def module(self) -> Module:
        """The user's module."""
        return self._original_module

    @property
    def device(self) -> torch.device:
        """The device of the user's module: its own ``device`` if it defines one, else its first parameter's."""
        original = self._original_module
        try:
            return original.device
        except AttributeError:
            pass
        for tensor in _tensors(original):
            return tensor.device
        return self._strategy.root_device

    @property
    def dtype(self) -> torch.dtype | None:
        """The floating dtype of the user's module (its own ``dtype`` if it defines one); ``None`` when mixed."""
        original = self._original_module
        try:
            return original.dtype
        except AttributeError:
            pass
        found = {t.dtype for t in _tensors(original) if t.is_floating_point()}
        if not found:
            return torch.get_default_dtype()
        return found.pop() if len(found) == 1 else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Skip nn.Module's call machinery for this transparent wrapper unless hooks were put on it;
        # the user's module still runs through its own __call__ (and global hooks fire there).
        if not (self._forward_pre_hooks or self._forward_hooks or self._backward_pre_hooks or self._backward_hooks):
            return self._forward_call(*args, **kwargs) if self._fast_path else self.forward(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._fast_path:
            return self._forward_call(*args, **kwargs)
        precision = self._strategy.precision
        args, kwargs = precision.convert_input((args, kwargs))
        with precision.forward_context():
            output = self._forward_call(*args, **kwargs)
        output = precision.convert_output(output)
        if self._check_backward and torch.is_grad_enabled():
            from fabric_core.utilities.apply_func import apply_to_tensors

            apply_to_tensors(output, self._guard_backward)
        return output

    def _guard_backward(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.requires_grad:
            tensor.register_hook(self._refuse_plain_backward)
        return tensor

    def _refuse_plain_backward(self, grad: torch.Tensor) -> None:
        strategy = self._strategy
        if not strategy.in_fabric_backward:
            raise RuntimeError(
                f"loss.backward() was called directly, but with strategy {strategy.name!r} and precision "
                f"{strategy.precision.name!r} the backward pass must go through Fabric (gradient scaling, engines): "
                "use fabric.backward(loss)."
            )

    def mark_forward_method(self, method: str | Callable[..., Any]) -> None:
        """Route calls of ``method`` (a ``generate``, a ``training_step``) through the strategy's wrapper."""
        if not isinstance(method, str) and not inspect.ismethod(method):
            raise TypeError(f"Expected a method or a string, but got: {type(method).__name__}")
        name = method if isinstance(method, str) else method.__name__
        if name == "forward":
            raise ValueError("You cannot mark the forward method itself as a forward method.")
        if not inspect.ismethod(getattr(self._original_module, name, None)):
            raise AttributeError(
                f"You marked {name!r} as a forward method, but `{type(self._original_module).__name__}.{name}` does not "
                "exist or is not a method."
            )
        self._forward_methods.add(name)

    def _redirect(self, name: str) -> Callable[..., Any]:
        original = self._original_module
        method = getattr(original, name)

        def call_forward_module(*args: Any, **kwargs: Any) -> Any:
            # The strategy's wrapper calls ``original.forward``; for this one call it runs ``method``.
            previous = original.__dict__.get("forward", _MISSING)  # a forward the user assigned

            def restore() -> None:
                if previous is _MISSING:
                    original.__dict__.pop("forward", None)
                else:
                    original.__dict__["forward"] = previous

            def forward_once(*a: Any, **k: Any) -> Any:
                restore()  # the method may call the real forward itself
                return method(*a, **k)

            original.__dict__["forward"] = forward_once
            try:
                return self(*args, **kwargs)
            finally:
                restore()

        return call_forward_module

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        if self._strategy.wrapper_owns_parameters and not args and not kwargs:
            return self._strategy.get_module_state_dict(self._original_module)
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if self._strategy.wrapper_owns_parameters and not assign:
            # what state_dict() returned (the wrapper's form) goes back through the strategy
            return self._strategy.load_module_state_dict(self._original_module, state_dict, strict=strict)
        return self._original_module.load_state_dict(state_dict, strict=strict, assign=assign)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.nn.Parameter]]:
        owner = self._forward_call if self._strategy.wrapper_owns_parameters else self._original_module
        return owner.named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)

    def __getattr__(self, name: str) -> Any:
        if name in _INTERNAL:
            return self.__dict__[name]
        state = self.__dict__
        if (
            name in state.get("_forward_methods", ())
            # through the wrapper (DDP, FSDP), or through the precision plugin (autocast, the backward guard)
            and (state["_forward_call"] is not state["_original_module"] or not state["_fast_path"])
            and inspect.ismethod(getattr(state["_original_module"], name, None))
        ):
            return self._redirect(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        original = state["_original_module"]
        value = getattr(original, name)
        if inspect.ismethod(value) and state["_forward_call"] is not original and not hasattr(Module, name):
            return self._watch_method(name, value)
        return value

    def _watch_method(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``method``; raise if it ran submodules outside the strategy's wrapper (DDP, FSDP), as Lightning does."""

        @functools.wraps(method)
        def watched(*args: Any, **kwargs: Any) -> Any:
            ran: list[bool] = []
            handles = [
                m.register_forward_pre_hook(lambda *_: ran.append(True)) for m in self._original_module.modules()
            ]
            try:
                output = method(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
            if ran:
                raise RuntimeError(
                    f"You are calling the method `{type(self._original_module).__name__}.{name}()` from outside the "
                    f"model: it ran submodules outside strategy {self._strategy.name!r}'s wrapper, so gradient "
                    "synchronisation / parameter sharding would not apply. Mark it as a forward method with "
                    f"`fabric_model.mark_forward_method({name!r})` after `fabric.setup()`."
                )
            return output

        return watched

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INTERNAL or name == "_forward_module" or "_original_module" not in self.__dict__:
            super().__setattr__(name, value)
            return
        original = self._original_module
        setattr(original, name, value)
        if name == "forward":
            # As in Lightning: ``fabric_module.forward = fn`` makes calling the wrapper run ``fn``.
            object.__setattr__(self, "forward", value)
            object.__setattr__(self, "_fast_path", False)

    def __repr__(self) -> str:
        return f"_FabricModule({self._original_module!r})"


def _tensors(module: Module) -> Iterator[torch.Tensor]:
    return itertools.chain(module.parameters(), module.buffers())


def is_wrapped(obj: object) -> bool:
    """Whether ``obj`` was returned by ``Fabric.setup*`` (a module, optimizer or dataloader)."""
    from fabric_core.wrappers.dataloader import _FabricDataLoader
    from fabric_core.wrappers.optimizer import _FabricOptimizer

    if isinstance(obj, Module):
        obj = unwrap_compiled(obj)
    return isinstance(obj, (_FabricModule, _FabricOptimizer, _FabricDataLoader))
