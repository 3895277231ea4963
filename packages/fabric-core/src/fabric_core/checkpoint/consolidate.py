"""Turning a sharded checkpoint folder into one ``torch.save`` file (no processes needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.torch_io import TorchCheckpointIO


def consolidate(folder: str | Path, output: str | Path | None = None) -> Path:
    """Merge the shards in ``folder`` (and its ``fabric_state.pt``) into ``output``; returns its path."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from fabric_core.strategies.fsdp_checkpoint import METADATA, PLAIN_STATE

    folder = Path(folder)
    if not (folder / METADATA).is_file():
        raise CheckpointError(f"{str(folder)!r} is not a sharded checkpoint folder (no {METADATA} file).")
    target = Path(output) if output else folder.with_name(folder.name + ".consolidated.pt")
    io = TorchCheckpointIO()
    tmp = target.with_name(f".fabric-tmp-{target.name}")
    dcp_to_torch_save(folder, tmp)
    try:
        merged = torch.load(tmp, map_location="cpu", weights_only=True)
    finally:
        tmp.unlink(missing_ok=True)
    if (folder / PLAIN_STATE).is_file():
        merged.update(io.load_checkpoint(folder / PLAIN_STATE))
    io.save_checkpoint(merged, target)
    return target
