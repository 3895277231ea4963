"""Callbacks that installed packages contribute through an entry-point group.

A package adds callbacks to every ``Fabric`` by declaring, in its ``pyproject.toml``::

    [project.entry-points."fabric_core.callbacks"]
    my_callbacks = "my_package.module:factory"

where ``factory()`` returns a callback or a list of callbacks. This is Lightning's
``lightning.fabric.callbacks_factory`` mechanism under core's own group name.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def load_external_callbacks(group: str) -> list[object]:
    """Call every factory registered under ``group`` and collect the callbacks they return."""
    from fabric_core.registry import entry_points_in  # the one cached pass over installed metadata

    found: list[object] = []
    for entry_point in entry_points_in(group):
        factory = entry_point.load()
        if not callable(factory):
            raise TypeError(
                f"The entry point {entry_point.name!r} = {entry_point.value!r} in group {group!r} must name a function "
                f"that returns callbacks, got {type(factory).__name__}."
            )
        produced = factory()
        callbacks = list(produced) if isinstance(produced, (list, tuple)) else [produced]
        callbacks = [c for c in callbacks if c is not None]
        if callbacks:
            log.info(
                "Adding %d callback(s) from entry point %r: %s",
                len(callbacks),
                entry_point.name,
                ", ".join(type(c).__name__ for c in callbacks),
            )
        found.extend(callbacks)
    return found
