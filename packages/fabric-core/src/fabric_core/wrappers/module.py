"""``_FabricModule``: forwards through the strategy's wrapper and the precision plugin."""

from __future__ import annotations

import inspect
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
        "_warned_methods",
    )
)


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
        module = module._orig_mod
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
    wrapper prefix. Methods named with ``mark_forward_method`` also go through the wrapper.
    """

    def __init__(self, forward_module: Module, strategy: Strategy, original_module: Module | None = None) -> None:
        super().__init__()
        self._forward_module = forward_module
        object.__setattr__(self, "_forward_call", forward_module)
        object.__setattr__(self, "_original_module", original_module if original_module is not None else forward_module)
        object.__setattr__(self, "_strategy", strategy)
        object.__setattr__(self, "_forward_methods", set())
        check_backward = strategy.requires_fabric_backward()
        object.__setattr__(self, "_check_backward", check_backward)
        object.__setattr__(self, "_fast_path", strategy.precision.is_identity and not check_backward)
        object.__setattr__(self, "_warned_methods", set())

    @property
    def module(self) -> Module:
        """The user's module."""
        return self._original_module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Skip nn.Module's call machinery for this transparent wrapper unless hooks were put on it;
        # the user's module still runs through its own __call__ (and global hooks fire there).
        if self._fast_path and not (
            self._forward_pre_hooks or self._forward_hooks or self._backward_pre_hooks or self._backward_hooks
        ):
            return self._forward_call(*args, **kwargs)
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
        name = method if isinstance(method, str) else getattr(method, "__name__", None)
        if not isinstance(name, str) or name == "forward":
            raise ValueError(f"mark_forward_method expects the name of a method other than 'forward', got {method!r}.")
        candidate = getattr(self._original_module, name, None)
        if not callable(candidate) or not inspect.ismethod(candidate):
            raise AttributeError(f"{type(self._original_module).__name__} has no method {name!r} to mark.")
        self._forward_methods.add(name)

    def _redirect(self, name: str) -> Callable[..., Any]:
        original = self._original_module
        method = getattr(original, name)

        def call_through_wrapper(*args: Any, **kwargs: Any) -> Any:
            # The strategy's wrapper calls ``original.forward``; for this one call it runs ``method``.
            def forward_once(*a: Any, **k: Any) -> Any:
                del original.forward
                return method(*a, **k)

            original.forward = forward_once
            try:
                return self(*args, **kwargs)
            finally:
                original.__dict__.pop("forward", None)

        return call_through_wrapper

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        if self._strategy.wrapper_owns_parameters and not args and not kwargs:
            return self._strategy.get_module_state_dict(self._original_module)
        return self._original_module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self._original_module.load_state_dict(state_dict, strict=strict, assign=assign)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.nn.Parameter]]:
        owner = self._forward_call if self._strategy.wrapper_owns_parameters else self._original_module
        return owner.named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)

    def __getattr__(self, name: str) -> Any:
        if name in _INTERNAL:
            return self.__dict__[name]
        if name in self.__dict__.get("_forward_methods", ()):
            return self._redirect(name)
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        original = self.__dict__["_original_module"]
        value = getattr(original, name)
        if (
            inspect.ismethod(value)
            and self.__dict__["_forward_call"] is not original
            and name not in self.__dict__["_warned_methods"]
            and not hasattr(Module, name)
        ):
            return self._watch_method(name, value)
        return value

    def _watch_method(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``method`` and warn once if it ran submodules outside the strategy's wrapper (DDP, FSDP)."""

        def watched(*args: Any, **kwargs: Any) -> Any:
            ran: list[bool] = []
            handles = [
                m.register_forward_pre_hook(lambda *_: ran.append(True)) for m in self._original_module.modules()
            ]
            try:
                return method(*args, **kwargs)
            finally:
                for handle in handles:
                    handle.remove()
                if ran and name not in self._warned_methods:
                    self._warned_methods.add(name)
                    import warnings

                    warnings.warn(
                        f"model.{name}() ran the model outside strategy {self._strategy.name!r}'s wrapper, so gradient "
                        f"synchronisation / parameter sharding did not apply. If it runs the forward pass, call "
                        f"model.mark_forward_method({name!r}) after fabric.setup.",
                        UserWarning,
                        stacklevel=2,
                    )

        return watched

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INTERNAL or name == "_forward_module" or "_original_module" not in self.__dict__:
            super().__setattr__(name, value)
            return
        original = self._original_module
        setattr(original, name, value)

    def __repr__(self) -> str:
        return f"_FabricModule({self._original_module!r})"


def is_wrapped(obj: object) -> bool:
    """Whether ``obj`` was returned by ``Fabric.setup*`` (a module, optimizer or dataloader)."""
    from fabric_core.wrappers.dataloader import _FabricDataLoader
    from fabric_core.wrappers.optimizer import _FabricOptimizer

    if isinstance(obj, Module):
        obj = unwrap_compiled(obj)
    return isinstance(obj, (_FabricModule, _FabricOptimizer, _FabricDataLoader))
