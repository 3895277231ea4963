"""Merging the shard folders ``xla_fsdp`` writes into one ordinary checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric_core.plugins.checkpointing import CheckpointError


def _is_optimizer_state(value: Any) -> bool:
    return isinstance(value, dict) and "state" in value and "param_groups" in value


def consolidate_checkpoint(folder: str | Path, output: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Merge the shards of an ``xla_fsdp`` checkpoint folder into a single file at ``output``.

    Model entries become full state dicts with the module's own parameter names (torch_xla's
    ``consolidate_sharded_state_dicts``); plain values are taken from rank 0. Optimizer entries are
    left out: their state belongs to the flattened shards and has no meaning for the full model.
    Runs on the host (no XLA device needed) and returns what it wrote.
    """
    import fsspec
    from fabric_core.plugins.bases import TorchCheckpointIO
    from torch_xla.distributed.fsdp import consolidate_sharded_state_dicts

    from fabric_xla.strategies.fsdp import SHARD_INFO_KEY, shard_file_name

    io = TorchCheckpointIO()
    fs, root = fsspec.core.url_to_fs(str(folder))
    if not fs.isdir(root):
        raise CheckpointError(f"{str(folder)!r} is not a folder of xla_fsdp shards.")
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    firsts = [n for n in names if n.startswith("rank-00000-of-") and n.endswith(".pt")]
    if len(firsts) != 1:
        raise CheckpointError(f"{str(folder)!r} must hold exactly one shard of rank 0; it holds {names}.")
    world_size = int(firsts[0][len("rank-00000-of-") : -len(".pt")])
    base = str(folder).rstrip("/")
    shards = [
        io.load_checkpoint(f"{base}/{shard_file_name(r, world_size)}", weights_only=weights_only)
        for r in range(world_size)
    ]
    infos = [shard.pop(SHARD_INFO_KEY, None) for shard in shards]
    if any(info is None or info["world_size"] != world_size for info in infos):
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
    io.save_checkpoint(merged, output)
    return merged
