"""Lightning's exception names (``lightning.fabric.utilities.exceptions``) for scripts that catch them."""

from __future__ import annotations

from fabric_core.errors import MisconfigurationError

#: Lightning's name for an invalid argument or combination: the same class as ``MisconfigurationError``.
MisconfigurationException = MisconfigurationError

__all__ = ["MisconfigurationException"]
