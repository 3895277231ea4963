"""Multi-replica jobs for a real TPU (PJRT_DEVICE=TPU): data parallel, FSDP, a failing replica."""

from __future__ import annotations

import sys

import torch
from fabric_core import Fabric
from fabric_xla import XLAReplicaError, consolidate_checkpoint
from xla_helpers import cpu_state, emit, make_data, train_fabric


def data_parallel(fabric: Fabric, n: int, checkpoint: str) -> dict:
    losses, model, optimizer, _ = train_fabric(fabric, n=n)
    world, rank = fabric.world_size, fabric.global_rank
    checksum = torch.stack([p.detach().float().sum() for p in model.parameters()]).sum()
    checksums = fabric.all_gather(checksum).cpu().tolist()
    mean_rank = fabric.all_reduce(torch.tensor(float(rank)), reduce_op="mean").item()
    max_rank = fabric.all_reduce(torch.tensor(float(rank)), reduce_op="max").item()
    from_last = fabric.broadcast({"rank": rank}, src=world - 1)
    tensor_from_last = fabric.broadcast(torch.full((3,), float(rank)), src=world - 1).cpu().tolist()
    fabric.barrier("before-save")
    fabric.save(checkpoint, {"model": model, "optimizer": optimizer, "world": world})
    fabric.load(checkpoint, {"model": model, "optimizer": optimizer})
    return {
        "world": world,
        "losses": losses,
        "state": {k: v.tolist() for k, v in cpu_state(model).items()},
        "checksums": checksums,
        "mean_rank": mean_rank,
        "max_rank": max_rank,
        "from_last": from_last,
        "tensor_from_last": tensor_from_last,
    }


def fsdp(fabric: Fabric, folder: str, merged: str) -> dict:
    losses, model, optimizer, _ = train_fabric(fabric, parameters=lambda m: m.parameters())
    before = model(make_data()[0].to(fabric.device)).cpu()
    fabric.save(folder, {"model": model, "optimizer": optimizer})
    fabric.load(folder, {"model": model, "optimizer": optimizer})
    after = model(make_data()[0].to(fabric.device)).cpu()
    if fabric.is_global_zero:
        consolidate_checkpoint(folder, merged)
    fabric.barrier()
    return {"world": fabric.world_size, "losses": losses, "before": before.tolist(), "after": after.tolist()}


def failing(fabric: Fabric) -> None:
    if fabric.global_rank == 1:
        raise RuntimeError("replica 1 fails on purpose")
    fabric.barrier("never-completes")  # the others wait for rank 1 here until the launcher stops them


if __name__ == "__main__":
    job = sys.argv[1]
    if job == "data_parallel":
        fabric = Fabric(accelerator="tpu", strategy="xla", devices="auto")
        emit(fabric.launch(data_parallel, int(sys.argv[2]), sys.argv[3]))
    elif job == "fsdp":
        fabric = Fabric(accelerator="tpu", strategy="xla_fsdp", devices="auto")
        emit(fabric.launch(fsdp, sys.argv[2], sys.argv[3]))
    else:
        try:
            Fabric(accelerator="tpu", strategy="xla", devices="auto").launch(failing)
        except XLAReplicaError as err:
            emit({"error": str(err)})
