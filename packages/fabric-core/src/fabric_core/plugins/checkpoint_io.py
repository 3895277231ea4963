"""The CheckpointIO interface: how a checkpoint dictionary reaches storage and comes back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class CheckpointIO(ABC):
    """Writes and reads a whole checkpoint dictionary.

    Contract for backend authors:

    - ``save_checkpoint`` must be atomic: after a crash at any point the previous content of
      ``path`` is intact and no partial file has taken its place.
    - ``load_checkpoint`` must not execute code from the file unless ``weights_only=False`` is
      asked for explicitly, and must raise ``fabric_core.checkpoint.errors.CheckpointError`` naming
      the file for anything it cannot read.
    - Paths may be local paths or fsspec URLs.
    """

    @abstractmethod
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically."""

    @abstractmethod
    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool = True) -> dict[str, Any]:
        """Read the checkpoint stored at ``path``."""

    @abstractmethod
    def remove_checkpoint(self, path: str | Path) -> None:
        """Delete the checkpoint at ``path``."""

    def teardown(self) -> None:
        """Release resources (open handles, background writers)."""
