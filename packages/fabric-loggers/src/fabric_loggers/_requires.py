"""Import a tracker library when a logger first needs it, or say the exact pip command that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """``import module``; a missing library raises ``ModuleNotFoundError`` naming the fabric-loggers extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the library is there but one of its own dependencies is broken: show that error
        raise ModuleNotFoundError(
            f'This logger needs the {module.split(".")[0]} package: pip install "fabric-loggers[{extra}]"',
            name=module,
        ) from error
