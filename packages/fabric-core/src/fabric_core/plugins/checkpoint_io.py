"""The CheckpointIO interface: how a checkpoint dictionary reaches storage and comes back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import Future
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
    - Paths may be local paths or fsspec URLs (``storage_options`` go to the fsspec filesystem).
    - Optional: ``load_checkpoint`` may accept ``verify`` and ``storage_options`` keywords; they
      are passed only when the user sets them (``fabric.load(..., verify=False)``).
    """

    @abstractmethod
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically."""

    @abstractmethod
    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool = True) -> dict[str, Any]:
        """Read the checkpoint stored at ``path``."""

    def save_checkpoint_async(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> Future[None]:
        """Snapshot ``checkpoint`` now and write it on a background thread; returns a future of the write.

        Writes run one at a time, in order. The default calls ``save_checkpoint`` from that thread.
        """
        from fabric_core.checkpoint.async_save import snapshot, submit
        from fabric_core.checkpoint.storage import check_location

        check_location(path)
        data = snapshot(checkpoint)
        return submit(self, lambda: self.save_checkpoint(data, path, storage_options=storage_options))

    def wait_for_saves(self) -> None:
        """Block until background saves started with ``save_checkpoint_async`` are written."""
        from fabric_core.checkpoint.async_save import wait

        wait(self)

    def teardown(self) -> None:
        """Release resources (open handles, background writers): pending background saves finish first."""
        from fabric_core.checkpoint.async_save import shutdown

        shutdown(self)


def load_options(verify: bool = True, storage_options: Any = None) -> dict[str, Any]:
    """The optional ``load_checkpoint`` keywords that differ from their defaults (older plugins lack them)."""
    options: dict[str, Any] = {}
    if not verify:
        options["verify"] = False
    if storage_options is not None:
        options["storage_options"] = storage_options
    return options
