"""The canonical precision names and the older aliases of the reference page."""

from __future__ import annotations

import warnings
from typing import Any

from fabric_core.errors import MisconfigurationError

CANONICAL = ("32-true", "64-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")
# alias -> (canonical name, whether the alias is ambiguous and deserves a warning)
_ALIASES: dict[Any, tuple[str, bool]] = {
    32: ("32-true", False),
    "32": ("32-true", False),
    "32-true": ("32-true", False),
    64: ("64-true", False),
    "64": ("64-true", False),
    "64-true": ("64-true", False),
    16: ("16-mixed", True),
    "16": ("16-mixed", True),
    "bf16": ("bf16-mixed", True),
}


def normalise_precision(precision: Any, extra: tuple[str, ...] = ()) -> str:
    """Map ``precision`` to its canonical name; ``extra`` are further names installed plugins provide."""
    if precision is None:
        return "32-true"
    if isinstance(precision, bool):
        raise _invalid(precision, extra)
    try:
        known = precision in _ALIASES
    except TypeError:  # unhashable values (lists, dicts)
        raise _invalid(precision, extra) from None
    if known:
        name, ambiguous = _ALIASES[precision]
        if ambiguous:
            warnings.warn(
                f"precision={precision!r} is ambiguous and is read as {name!r}. Write {name!r} (or the '-true' "
                "form for weights stored in that dtype) to silence this warning.",
                UserWarning,
                stacklevel=4,
            )
        return name
    if isinstance(precision, str) and (precision in CANONICAL or precision in extra):
        return precision
    raise _invalid(precision, extra)


def _invalid(precision: Any, extra: tuple[str, ...]) -> MisconfigurationError:
    names = [*CANONICAL, *(e for e in extra if e not in CANONICAL)]
    return MisconfigurationError(
        f"precision={precision!r} is not supported. Choose one of: {', '.join(repr(n) for n in names)} "
        "(or the older forms 32, 64, 16, 'bf16')."
    )
