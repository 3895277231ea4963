"""A user script: `python ds_train_named.py <strategy name> <precision> <out.json> [accelerator devices]`.

Fabric re-runs it for rank 1 (the strategies' default "popen" launch), the way a user's script runs.
Rank 0 writes the per-step losses to out.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from fabric_core import Fabric
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ds_training as T


def main() -> None:
    name, precision, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    accelerator, devices = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else ("cpu", 2)
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy=name, precision=precision)
    fabric.launch()
    with fabric.init_module():
        model = T.Net()
    partitioned = all(p.numel() == 0 for p in model.parameters())  # ZeRO-3 only; False for other stages
    losses, model, _ = T.full_batch(fabric, model, steps=12)
    if fabric.global_rank == 0:
        out.write_text(
            json.dumps({"losses": losses, "world_size": fabric.world_size, "partitioned_at_init": partitioned})
        )
    fabric.barrier()
    assert isinstance(model(torch.ones(1, T.IN, device=fabric.device)), torch.Tensor) and isinstance(model, nn.Module)


if __name__ == "__main__":
    main()
