"""Creating modules without paying for random initialisation of weights that get overwritten."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode

_INIT_FUNCTIONS = frozenset(
    getattr(torch.nn.init, name)
    for name in (
        "uniform_",
        "normal_",
        "trunc_normal_",
        "constant_",
        "xavier_uniform_",
        "xavier_normal_",
        "kaiming_uniform_",
        "kaiming_normal_",
        "orthogonal_",
        "sparse_",
        "ones_",
        "zeros_",
        "eye_",
        "dirac_",
    )
)
_INPLACE_RANDOM = frozenset(("uniform_", "normal_", "fill_", "zero_", "random_", "exponential_", "bernoulli_"))


class _SkipInit(TorchFunctionMode):
    """Turns parameter initialisation calls into no-ops for the duration of the mode."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _INIT_FUNCTIONS or getattr(func, "__name__", "") in _INPLACE_RANDOM:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


@contextmanager
def skip_parameter_init() -> Generator[None, None, None]:
    """Skip weight initialisation while modules are created (their values are loaded later).

    Scoped to the ``with`` block through a torch function mode; nothing in torch is replaced.
    """
    with _SkipInit():
        yield
