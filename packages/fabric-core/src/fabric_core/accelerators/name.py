"""A registry name that can also be called, as Lightning's ``Accelerator.name()`` static method is."""

from __future__ import annotations


class CallableName(str):
    """``CPUAccelerator.name == "cpu"`` and ``CPUAccelerator.name() == "cpu"`` both hold."""

    __slots__ = ()

    def __call__(self) -> str:
        return str(self)
