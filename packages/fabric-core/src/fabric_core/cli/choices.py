"""Option types whose valid values are the names installed plugins register (read when first needed)."""

from __future__ import annotations

from typing import Any

import click


class RegistryChoice(click.Choice):
    """A ``click.Choice`` over the registered names of one plugin kind, plus fixed extras (``auto``).

    The registry is read on first use (``--help`` or parsing), never at import. A name that a known,
    uninstalled package provides fails with that package's pip command.
    """

    def __init__(self, kind: str, extras: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.extras = extras
        self.case_sensitive = True
        self._choices: tuple[str, ...] | None = None

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._choices is None:
            from fabric_core import registry

            names = sorted(registry.available(self.kind))
            self._choices = (*self.extras, *(n for n in names if n not in self.extras))
        return self._choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value not in self.choices:
            from fabric_core import registry

            hint = registry.install_hint(self.kind, value)
            if hint is not None:
                self.fail(f"{value!r} is provided by a separate package: {hint}", param, ctx)
        return super().convert(value, param, ctx)


def accelerator_choice() -> RegistryChoice:
    return RegistryChoice("accelerator", extras=("auto",))


def strategy_choice() -> RegistryChoice:
    return RegistryChoice("strategy", extras=("auto",))


def precision_choice() -> RegistryChoice:
    """Canonical names and the short aliases ``fabric run`` has always accepted, plus plugin names."""
    from fabric_core.precision.names import CANONICAL

    return RegistryChoice("precision", extras=(*CANONICAL, "32", "64", "16", "bf16"))
