"""Warning categories scripts filter on, under Lightning's names (``lightning.fabric.utilities.warnings``)."""

from __future__ import annotations


class PossibleUserWarning(UserWarning):
    """A warning about something that may be a mistake, or may be intended (filter it once you know)."""


def disable_possible_user_warnings(module: str = "") -> None:
    """Silence ``PossibleUserWarning`` (for warnings raised from ``module``, a regex; all when empty)."""
    import warnings

    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)
