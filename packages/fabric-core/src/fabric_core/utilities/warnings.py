"""Warning categories scripts filter on, under Lightning's names (``lightning.fabric.utilities.warnings``)."""

from __future__ import annotations


class PossibleUserWarning(UserWarning):
    """A warning about something that may be a mistake, or may be intended (filter it once you know)."""
