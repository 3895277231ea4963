"""Merging the shard folders ``xla_fsdp`` writes into one ordinary checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric_core.plugins.checkpointing import CheckpointError


def _is_optimizer_state(value: Any) -> bool:
    return isinstance(value, dict) and "state" in value and "param_groups" in value


def consolidate_checkpoint(
    folder: str | Path,
    output: str | Path,
    weights_only: bool = True,
    verify: bool = True,
    storage_options: Any = None,
) -> dict[str, Any]:
    """Merge the shards of an ``xla_fsdp`` checkpoint folder into a single file at ``output``.

    Model entries become full state dicts with the module's own parameter names (torch_xla's
    ``consolidate_sharded_state_dicts``); plain values are taken from rank 0. Optimizer entries are
    left out: their state belongs to the flattened shards and has no meaning for the full model.
    Every shard is checked against the folder's checksum manifest first unless ``verify=False``.
    ``folder`` and ``output`` may be fsspec URLs (``storage_options`` go to both). Runs on the host
    (no XLA device needed) and returns what it wrote.
    """
    from fabric_core.plugins.bases import TorchCheckpointIO
    from fabric_core.plugins.checkpoint_io import load_options
    from torch_xla.distributed.fsdp import consolidate_sharded_state_dicts

    from fabric_xla.shard_folder import SHARD_INFO_KEY, shard_urls

    io = TorchCheckpointIO()
    urls = shard_urls(folder, storage_options, verify=verify)
    options = load_options(verify, storage_options)
    shards = [io.load_checkpoint(url, weights_only=weights_only, **options) for url in urls]
    infos = [shard.pop(SHARD_INFO_KEY, None) for shard in shards]
    if not infos or any(info is None or info["world_size"] != len(shards) for info in infos):
        raise CheckpointError(
            f"{str(folder)!r} mixes shards of different checkpoints or is not an xla_fsdp checkpoint."
        )
    metadata = infos[0]["shard_metadata"]
    merged: dict[str, Any] = {}
    for key, value in shards[0].items():
        if key in metadata:
            merged[key] = dict(consolidate_sharded_state_dicts([shard[key] for shard in shards], metadata[key]))
        elif not _is_optimizer_state(value):
            merged[key] = value
    io.save_checkpoint(merged, output, storage_options=storage_options)
    return merged
