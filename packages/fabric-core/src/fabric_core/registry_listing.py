"""``STRATEGY_REGISTRY`` and ``ACCELERATOR_REGISTRY``: Lightning's registry objects as read-only listings.

They list what the installed packages register through entry points (``fabric_core.strategies``,
``fabric_core.accelerators``) and build an entry by name. Registering at run time is refused: a
process-wide mutable table would make two ``Fabric`` objects depend on each other; a package adds
names through its entry points instead (see the plugins page).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

from fabric_core.errors import MisconfigurationError


class RegistryListing:
    """The names registered for one plugin kind; ``get(name)`` builds that plugin."""

    def __init__(self, kind: str, group: str) -> None:
        self._kind = kind
        self._group = group

    def _names(self) -> dict[str, Any]:
        from fabric_core import registry

        return registry.available(self._kind)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())

    def __getitem__(self, name: str) -> dict[str, Any]:
        """What is known about ``name`` without importing it: its description, package and target."""
        entry = self._names().get(name)
        if entry is None:
            raise KeyError(f"{self._kind} {name!r} is not registered; registered: {', '.join(self)}.")
        return {
            f"{self._kind}_name": name,
            "description": f"{name} (from {entry.distribution or 'an unnamed package'})",
            "distribution": entry.distribution,
            "target": entry.value,
            "init_params": {},
        }

    def get(self, name: str, default: Any = None) -> Any:
        """A new instance of the ``name`` plugin (``default`` when nothing registers that name)."""
        if name not in self:
            return default
        from fabric_core import registry

        made = registry.load(self._kind, name)
        return made() if callable(made) else made

    def available_strategies(self) -> list[str]:
        """The registered strategy names (Lightning's method name)."""
        return list(self)

    def available_accelerators(self) -> set[str]:
        """The registered accelerator names (Lightning's method name; a set, as there)."""
        return set(self)

    def register(self, name: str, *args: Any, **kwargs: Any) -> NoReturn:
        raise MisconfigurationError(
            f"{self._kind} names are registered through the entry-point group {self._group!r} of an installed package, "
            f"not at run time (a process-wide table would couple every Fabric object). Declare {name!r} in your "
            f"package's pyproject.toml: [project.entry-points.{self._group!r}] {name} = 'your_module:factory', "
            f"or pass the object itself: Fabric({self._kind}=YourClass(...))."
        )

    def remove(self, name: str) -> NoReturn:
        raise MisconfigurationError(
            f"{self._kind} names come from installed packages' entry points ({self._group!r}); uninstall the package "
            f"to remove {name!r}."
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._kind}: {', '.join(self)})"


STRATEGY_REGISTRY = RegistryListing("strategy", "fabric_core.strategies")
ACCELERATOR_REGISTRY = RegistryListing("accelerator", "fabric_core.accelerators")
