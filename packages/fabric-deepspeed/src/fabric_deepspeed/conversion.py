"""Turning a sharded DeepSpeed checkpoint folder into one file that loads without DeepSpeed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric_core.plugins.checkpointing import CheckpointError

from fabric_deepspeed.checkpointing import META_KEY


def convert_zero_checkpoint_to_fp32_state_dict(
    checkpoint_dir: str | Path, output_file: str | Path, tag: str | None = None
) -> dict[str, Any]:
    """Gather the float32 master weights of a ZeRO checkpoint (stage 1, 2 or 3) into one file.

    The file holds the model's full state dict under the key it had in ``fabric.save`` (``"model"``
    for folders DeepSpeed wrote directly) plus the other entries that were saved next to it; the
    optimizer state is left out (it only makes sense sharded, for DeepSpeed). Load it with any
    strategy: ``fabric.load("model.pt", {"model": model})`` or ``torch.load``.

    Runs in one process, offline, and needs memory for the whole model. Like DeepSpeed's
    ``zero_to_fp32``, on which it is built, it unpickles the shards with ``weights_only=False``: use it on
    checkpoints you trust. Returns what it wrote.
    """
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from fabric_core.plugins.bases import TorchCheckpointIO

    from fabric_deepspeed.safe_loading import allowed_globals

    folder = Path(checkpoint_dir)
    if not (folder / "latest").is_file() and tag is None:
        raise CheckpointError(
            f"{str(folder)!r} is not a DeepSpeed checkpoint folder (it has no 'latest' file naming the tag)."
        )
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    tag = tag or (folder / "latest").read_text().strip()
    model_files = sorted((folder / tag).glob("*mp_rank_00_model_states.pt"))
    if not model_files:
        raise CheckpointError(
            f"{str(folder / tag)!r} holds no model-states file; is it a complete DeepSpeed checkpoint?"
        )
    with torch.serialization.safe_globals(allowed_globals()):
        model_states = torch.load(model_files[0], map_location="cpu", weights_only=True)
    meta = model_states.get(META_KEY)
    if isinstance(meta, dict):
        model_key = meta.get("model", "model")
        extra = {k: model_states[k] for k in meta.get("client_keys", []) if k in model_states}
    else:
        model_key, extra = "model", {}
    converted = {**extra, model_key: dict(state_dict)}
    TorchCheckpointIO().save_checkpoint(converted, output_file)
    return converted
