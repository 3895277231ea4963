"""Single-file checkpoints through ``torch.save``/``torch.load``, written atomically."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from fabric_core.checkpoint.atomic import atomic_write, atomic_write_local
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.integrity import ALGORITHM, INTEGRITY_KEY, HashingWriter, seal_zip, start_verification
from fabric_core.checkpoint.storage import check_location, filesystem, is_remote, local_path
from fabric_core.plugins.checkpoint_io import CheckpointIO

FORMAT_KEY = "__fabric_format__"
FORMAT_VERSION = 1


class TorchCheckpointIO(CheckpointIO):
    """Writes ``torch.save`` files atomically; reads them with ``weights_only`` by default.

    Every file records ``__fabric_format__`` so that a newer format is refused with a clear message
    instead of being misread, and carries an XXH3-128 checksum of its bytes (hashed while written)
    that loading verifies unless ``verify=False``. Files written by plain ``torch.save`` load too
    (unverified: they carry no checksum).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        self.wait_for_saves()  # an earlier background save of the same path must not land after this one
        self.write_file(checkpoint, path, storage_options)

    def write_file(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> tuple[int, str]:
        """Write ``checkpoint`` atomically; returns the whole file's (size, checksum) for folder manifests."""
        if not isinstance(checkpoint, dict):
            raise TypeError(f"A checkpoint must be a dict, got {type(checkpoint).__name__}.")
        check_location(path)
        payload = {FORMAT_KEY: FORMAT_VERSION, INTEGRITY_KEY: ALGORITHM, **checkpoint}

        if not is_remote(path):
            # torch's own writer to a path (no Python write calls, no extra copy of each record), then
            # one hashing pass over the page cache while the data is flushed to disk
            def write_local(tmp: Path, fd: int) -> tuple[int, str]:
                torch.save(payload, str(tmp))
                return seal_zip(fd)

            return atomic_write_local(path, write_local)

        def stream(f: Any) -> tuple[int, str]:
            writer = HashingWriter(f, zip_trailer=True)
            torch.save(payload, writer)  # type: ignore[arg-type]
            writer.finish()
            return writer.written, writer.file_digest

        return atomic_write(path, stream, storage_options)

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any = None,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        check_location(path)
        self.wait_for_saves()
        if is_remote(path):
            return self._load_remote(path, map_location, weights_only, verify, storage_options)
        return self._load_local(local_path(path), str(path), map_location, weights_only, verify)

    def _load_remote(
        self, path: str | Path, map_location: Any, weights_only: bool, verify: bool, storage_options: Any
    ) -> dict[str, Any]:
        """Download once into a temporary local file, then read it like a local one."""
        import tempfile

        fs, remote = filesystem(path, storage_options)
        fs.invalidate_cache(remote)
        if not fs.exists(remote):
            raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
        if fs.isdir(remote):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is a folder; a single-file checkpoint was expected (sharded checkpoints "
                "are folders: load them with the strategy that wrote them)."
            )
        with tempfile.TemporaryDirectory(prefix="fabric-download-") as folder:
            local = Path(folder) / "checkpoint.pt"
            fs.get_file(remote, str(local))
            return self._load_local(local, str(path), map_location, weights_only, verify)

    def _load_local(self, file: Path, name: str, map_location: Any, weights_only: bool, verify: bool) -> dict[str, Any]:
        path = name
        try:
            handle = open(file, "rb")  # noqa: SIM115 - closed by the ``with handle`` below
        except FileNotFoundError:
            raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.") from None
        except IsADirectoryError:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is a folder; a single-file checkpoint was expected (sharded checkpoints "
                "are folders: load them with the strategy that wrote them)."
            ) from None
        with handle:
            head = handle.read(4)
        if not head:
            raise CheckpointError(f"Checkpoint {str(path)!r} could not be read: it is truncated, empty (0 bytes).")
        if head[:2] != b"PK" and head[:1] != b"\x80":
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is not a file written by torch.save (it starts with {head!r}; "
                "a torch checkpoint is a zip archive or a pickle)."
            )
        verified = False
        check = start_verification(str(file), name) if verify else None
        if check is not None and not weights_only:
            verified = check.result()  # full unpickling of a file that is not verified yet: never
        try:
            data = _read(file, path, map_location, weights_only)
        except CheckpointError:
            if check is not None:
                check.result()  # a checksum mismatch explains the failure best
            raise
        if check is not None:
            verified = check.result()  # safe loading read it meanwhile; damaged data is dropped here
        if not isinstance(data, dict):
            raise CheckpointError(
                f"Checkpoint {str(path)!r} holds a {type(data).__name__}, but a dict of state was expected."
            )
        if data.pop(INTEGRITY_KEY, None) is not None and verify and not verified:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} is damaged: it was written with a checksum, but the checksum at its end is "
                "missing or damaged (truncated or changed file). Pass verify=False to load it anyway."
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


def _read(file: Path, path: str, map_location: Any, weights_only: bool) -> Any:
    """``torch.load`` from a local path (torch's own reader, which releases the GIL), errors as CheckpointError."""
    try:
        return torch.load(str(file), map_location=map_location, weights_only=weights_only)
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
