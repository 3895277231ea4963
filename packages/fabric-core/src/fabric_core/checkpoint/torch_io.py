"""Single-file checkpoints through ``torch.save``/``torch.load``, written atomically."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from fabric_core.checkpoint.atomic import atomic_write, open_for_reading, remove
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.plugins.checkpoint_io import CheckpointIO

FORMAT_KEY = "__fabric_format__"
FORMAT_VERSION = 1


class TorchCheckpointIO(CheckpointIO):
    """Writes ``torch.save`` files atomically; reads them with ``weights_only`` by default.

    Every file records ``__fabric_format__`` so that a newer format is refused with a clear message
    instead of being misread. Files written by plain ``torch.save`` load too.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if not isinstance(checkpoint, dict):
            raise TypeError(f"A checkpoint must be a dict, got {type(checkpoint).__name__}.")
        payload = {FORMAT_KEY: FORMAT_VERSION, **checkpoint}
        atomic_write(path, lambda f: torch.save(payload, f), storage_options)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool = True) -> dict[str, Any]:
        try:
            handle = open_for_reading(path)
        except FileNotFoundError:
            raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.") from None
        except IsADirectoryError:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is a folder; a single-file checkpoint was expected (sharded checkpoints "
                "are folders: load them with the strategy that wrote them)."
            ) from None
        with handle:
            head = handle.read(4)
            handle.seek(0)
            if not head:
                raise CheckpointError(f"Checkpoint {str(path)!r} could not be read: it is truncated, empty (0 bytes).")
            if head[:2] != b"PK" and head[:1] != b"\x80":
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} is not a file written by torch.save (it starts with {head!r}; "
                    "a torch checkpoint is a zip archive or a pickle)."
                )
            try:
                data = torch.load(handle, map_location=map_location, weights_only=weights_only)
            except pickle.UnpicklingError as err:
                if weights_only and "weights_only" in str(err):
                    raise CheckpointError(
                        f"Checkpoint {str(path)!r} holds objects that safe loading refuses (it would run code from the "
                        f"file): {str(err).splitlines()[0]} Load it with weights_only=False only if you trust the file."
                    ) from None
                raise CheckpointError(f"Checkpoint {str(path)!r} is damaged or not a torch checkpoint: {err}") from None
            except Exception as err:  # torch's reader raises many types for bytes that are not a checkpoint
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} could not be read: it is truncated, empty or not a file written by "
                    f"torch.save ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})."
                ) from None
        if not isinstance(data, dict):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} holds a {type(data).__name__}, but a dict of state was expected."
            )
        version = data.pop(FORMAT_KEY, FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} has an invalid format marker {version!r}; this fabric-core writes and reads "
                f"format {FORMAT_VERSION}."
            )
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} was written in format {version} by a newer fabric-core; this one reads "
                f"up to format {FORMAT_VERSION}. Upgrade: pip install -U fabric-core"
            )
        return data

    def remove_checkpoint(self, path: str | Path) -> None:
        remove(path)
