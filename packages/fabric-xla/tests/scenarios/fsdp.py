"""xla_fsdp with one replica (CPU_NUM_DEVICES=1): train, save shards, restore, merge; refused set-ups."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.checkpointing import CheckpointError
from fabric_xla import consolidate_checkpoint, sharded_parameters
from xla_helpers import cpu_state, emit, make_data, make_model, train_fabric


def own_parameters(model: torch.nn.Module):
    """What a user writes: the optimizer from the set-up module's parameters (the wrapper owns them)."""
    return model.parameters()


def train_save_load(fabric: Fabric, folder: str, merged_file: str) -> dict:
    losses, model, optimizer, _ = train_fabric(fabric, parameters=own_parameters)
    x, _ = make_data()
    before = model(x.to(fabric.device)).cpu()
    # model.state_dict() is the wrapper's shard and model.load_state_dict takes it back.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.load_state_dict(state)
    round_trip = model(x.to(fabric.device)).cpu().tolist() == before.tolist()
    fabric.save(folder, {"model": model, "optimizer": optimizer, "epoch": 3})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    remainder = fabric.load(folder, {"model": model, "optimizer": optimizer})
    after = model(x.to(fabric.device)).cpu()
    merged = consolidate_checkpoint(folder, merged_file)
    result = {
        "losses": losses,
        "before": before.tolist(),
        "after": after.tolist(),
        "remainder": remainder,
        "merged_keys": sorted(merged),
        "parameter_names": [name for name, _ in model.named_parameters()],
        "state_keys_sharded": all("_fsdp_shard" in key for key in model.state_dict()),
        "state_dict_round_trip": round_trip,
        "sharded_parameters_alias": [id(p) for p in sharded_parameters(model)] == [id(p) for p in model.parameters()],
    }
    # The same through an fsspec URL: shards and manifest uploaded, read back, merged from there.
    url = "memory://bucket/xla-fsdp"
    fabric.save(url, {"model": model, "epoch": 4})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    result["url_remainder"] = fabric.load(url, {"model": model})
    result["url_after"] = model(x.to(fabric.device)).cpu().tolist()
    result["url_merged_keys"] = sorted(consolidate_checkpoint(url, merged_file + ".from-url"))
    try:
        fabric.save(folder + "-async", {"model": model}, async_=True)
    except ValueError as err:
        result["async_refused"] = str(err)
    # A damaged shard is refused before anything is restored, unless verify=False.
    shard = Path(folder) / "rank-00000-of-00001.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    try:
        fabric.load(folder, {"model": model, "optimizer": optimizer})
    except CheckpointError as err:
        result["damaged"] = str(err)
    return result


def refused(fabric: Fabric) -> dict:
    messages = {}
    model = make_model()
    try:
        fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    except MisconfigurationError as err:
        messages["joint"] = str(err)
    params = list(model.parameters())
    fabric.setup_module(model)
    try:
        fabric.setup_optimizers(torch.optim.SGD(params, lr=0.1))
    except MisconfigurationError as err:
        messages["stale"] = str(err)
    return messages


if __name__ == "__main__":
    folder, merged_file = sys.argv[1], sys.argv[2]
    result = Fabric(accelerator="tpu", strategy="xla_fsdp", devices=1).launch(train_save_load, folder, merged_file)
    result["refused"] = Fabric(accelerator="tpu", strategy="xla_fsdp", devices=1).launch(refused)
    plain = make_model()
    plain.load_state_dict(torch.load(merged_file, weights_only=True)["model"])
    result["plain"] = plain(make_data()[0]).tolist()
    result["plain_state_keys"] = sorted(cpu_state(plain))
    emit(result)
