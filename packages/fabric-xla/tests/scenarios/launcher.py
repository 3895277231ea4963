"""Launch two replicas on the CPU device (no collectives: those hang there upstream)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from fabric_core import Fabric
from fabric_xla import XLAReplicaError, XLAStrategy
from torch.utils.data import DataLoader, TensorDataset
from xla_helpers import emit


def replica(fabric: Fabric, fail_rank: int, outdir: str) -> dict:
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.arange(20.0)), batch_size=2, shuffle=True))
    seen = sorted(int(v) for (x,) in loader for v in x.cpu().tolist())
    Path(outdir, f"seen-{fabric.global_rank}.json").write_text(json.dumps(seen))
    if fabric.global_rank == fail_rank:
        raise ValueError(f"replica {fail_rank} fails on purpose")
    x = torch.ones(2, device=fabric.device) * (fabric.global_rank + 1)
    return {
        "rank": fabric.global_rank,
        "local_rank": fabric.local_rank,
        "world_size": fabric.world_size,
        "device": str(fabric.device),
        "on_device": x.sum().item(),
        "seen": seen,
        "batch_device": str(next(iter(loader))[0].device),
    }


if __name__ == "__main__":
    fail_rank, outdir = int(sys.argv[1]), sys.argv[2]
    fabric = Fabric(accelerator="tpu", strategy=XLAStrategy(allow_cpu_multiprocess=True), devices=2)
    try:
        emit({"ok": fabric.launch(replica, fail_rank, outdir)})
    except XLAReplicaError as err:
        emit({"error": str(err)})
