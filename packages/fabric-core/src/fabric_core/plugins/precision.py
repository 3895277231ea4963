"""The Precision interface: how numbers are represented during forward, backward and step."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor
    from torch.nn import Module
    from torch.optim import Optimizer


class Precision:
    """Full 32-bit precision; subclasses change the dtype, autocast or add gradient scaling.

    Contract for backend authors:

    - ``name`` is the canonical registry name (``"bf16-mixed"``).
    - ``convert_module`` casts parameters where the precision stores them in another dtype.
    - ``forward_context`` wraps the forward pass (autocast for mixed precision);
      ``convert_input`` / ``convert_output`` cast floating tensors going in and out, so that users
      always get outputs in the default dtype.
    - ``module_init_context`` / ``tensor_init_context`` make new parameters and tensors appear
      directly in the target dtype.
    - ``backward`` / ``optimizer_step`` / ``unscale_gradients`` are where a gradient scaler hooks
      in; ``state_dict`` must hold whatever has to survive a checkpoint (the scaler state).
    - ``requires_fabric_backward`` is ``True`` when a plain ``loss.backward()`` would silently train
      wrongly (a scaler); Fabric then refuses it with a clear error.
    - ``is_identity`` is ``True`` only when every hook above is a no-op, which lets wrappers take a
      fast path in the training step; ``plain_backward_and_step`` is ``True`` when at least backward
      and the optimizer step are (autocast without a scaler), so those two go straight to torch.
    """

    name: ClassVar[str] = "32-true"
    is_identity: ClassVar[bool] = True

    @property
    def requires_fabric_backward(self) -> bool:
        """Whether ``loss.backward()`` would be wrong here (a gradient scaler must scale the loss)."""
        return False

    @property
    def plain_backward_and_step(self) -> bool:
        """Whether backward is ``loss.backward()`` and the step ``optimizer.step()`` (no scaler, no engine)."""
        return self.is_identity

    def convert_module(self, module: Module) -> Module:
        """Cast ``module`` to the dtype its parameters are stored in."""
        return module

    def forward_context(self) -> AbstractContextManager[object]:
        """A context manager wrapped around each forward pass."""
        return nullcontext()

    def module_init_context(self) -> AbstractContextManager[object]:
        """A context manager under which new modules are created in the target dtype."""
        return self.tensor_init_context()

    def tensor_init_context(self) -> AbstractContextManager[object]:
        """A context manager under which new tensors are created in the target dtype."""
        return nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Cast floating-point tensors in ``data`` before they enter the module."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Cast floating-point tensors in ``data`` back to the default dtype."""
        return data

    def pre_backward(self, tensor: Tensor, module: Module | None) -> Tensor:
        """Transform the loss before backward (a gradient scaler scales it here)."""
        return tensor

    def backward(self, tensor: Tensor, model: Module | None, *args: Any, **kwargs: Any) -> None:
        """Run the backward pass."""
        tensor.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def post_backward(self, tensor: Tensor, module: Module | None) -> None:
        """Run after backward."""

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step ``optimizer``; a scaler may skip the step when gradients overflowed."""
        return optimizer.step(**kwargs)

    def unscale_gradients(self, optimizer: Optimizer) -> None:
        """Divide the gradients of ``optimizer`` by the loss scale, if there is one."""

    def state_dict(self) -> dict[str, Any]:
        """State that must be saved with a checkpoint."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def teardown(self) -> None:
        """Release resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@contextmanager
def default_dtype(dtype: torch.dtype) -> Generator[None, None, None]:
    """Temporarily make ``dtype`` the default floating dtype (for init contexts)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


#: Lightning's precision plugin classes, importable from here as from ``lightning.fabric.plugins.precision``.
_IMPLEMENTATIONS = {
    "MixedPrecision": "fabric_core.precision.mixed",
    "DoublePrecision": "fabric_core.precision.true_dtype",
    "HalfPrecision": "fabric_core.precision.true_dtype",
}


def __getattr__(name: str) -> Any:
    """Load the implementations on first use (they import torch; this interface module does not)."""
    module = _IMPLEMENTATIONS.get(name)
    if module is None:
        if not name.endswith("Precision") or name.startswith("_"):  # e.g. the import system asking for __path__
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        # Lightning's backend precisions (``DeepSpeedPrecision``) from the installed packages.
        from fabric_core.registry import backend_class

        for kind in ("precision", "strategy", "accelerator"):
            found = backend_class(kind, name)
            if found is not None:
                return found
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
