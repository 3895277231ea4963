"""Turning a sharded checkpoint folder into one ``torch.save`` file (no processes needed)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.folder import open_folder
from fabric_core.checkpoint.manifest import raise_problems, verify_files
from fabric_core.checkpoint.storage import is_remote, local_path
from fabric_core.checkpoint.torch_io import TorchCheckpointIO


def default_output(folder: str | Path) -> str:
    """``FOLDER.consolidated.pt`` beside the folder (a URL stays a URL)."""
    if is_remote(folder):
        return str(folder).rstrip("/") + ".consolidated.pt"
    path = local_path(folder)
    return str(path.with_name(path.name + ".consolidated.pt"))


def consolidate(
    folder: str | Path,
    output: str | Path | None = None,
    verify: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Merge the shards in ``folder`` (and its ``fabric_state.pt``) into ``output``; returns its path.

    Both may be local paths or fsspec URLs; the folder's checksums are verified first unless ``verify=False``.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from fabric_core.strategies.fsdp_checkpoint import METADATA, PLAIN_STATE

    try:
        found = open_folder(folder, storage_options, foreign_marker=METADATA)
    except CheckpointError as err:
        raise CheckpointError(f"{str(folder)!r} is not a sharded checkpoint folder: {err}") from None
    if verify and found.manifest is not None:
        raise_problems(str(folder), verify_files(found.fs, found.folder, found.manifest))
    target = str(output) if output else default_output(folder)
    io = TorchCheckpointIO()
    with tempfile.TemporaryDirectory(prefix="fabric-consolidate-") as scratch:
        shards = Path(found.folder)
        if found.fs is not None:  # DCP's converter reads local folders: download once
            shards = Path(scratch) / "shards"
            found.fs.get(found.folder.rstrip("/") + "/", str(shards), recursive=True)
        merged_file = Path(scratch) / "merged.pt"
        dcp_to_torch_save(shards, merged_file)
        merged = torch.load(merged_file, map_location="cpu", weights_only=True)
        if (shards / PLAIN_STATE).is_file():
            merged.update(io.load_checkpoint(shards / PLAIN_STATE, verify=verify))
    io.save_checkpoint(merged, target, storage_options=storage_options)
    return target
