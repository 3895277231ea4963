"""One timed job for bench_ddp_startup.py: 2 CPU processes, DDP over gloo, up to the first optimizer step.

    python benchmarks/ddp_startup_worker.py MODE RESULT_FILE

Rank 0 writes ``time.time()`` right after its first optimizer step into RESULT_FILE; the parent
subtracts the time it started the job. Modes:

- ``raw``: torch.multiprocessing.spawn + gloo init_process_group + DistributedDataParallel;
- ``fabric``: ``Fabric(strategy="ddp_spawn", devices=2, accelerator="cpu").launch(train)``;
- ``script``: a script-style ``Fabric(strategy="ddp", devices=2, accelerator="cpu"); fabric.launch()``:
  run plainly it starts the other rank by re-running itself; under ``fabric run`` or torchrun it joins;
- ``raw_env``: init_process_group from torchrun's environment + DistributedDataParallel (raw torchrun);
- ``lightning``: Lightning Fabric's script style (self-relaunch), for comparison when installed.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def _model_and_batch() -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.randn(8, 32), torch.randint(0, 10, (8,))
    return model, x, y


def _record(path: str) -> None:
    with open(path, "w") as f:
        f.write(repr(time.time()))


def raw_worker(rank: int, world_size: int, port: int, path: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    init = f"tcp://127.0.0.1:{port}" if port else "env://"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    model, x, y = _model_and_batch()
    model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if rank == 0:
        _record(path)
    dist.barrier()
    dist.destroy_process_group()


def fabric_train(fabric: Any, path: str) -> None:
    import torch

    model, x, y = _model_and_batch()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    fabric.backward(loss)
    optimizer.step()
    if fabric.global_rank == 0:
        _record(path)
    fabric.barrier()


def raw_env_worker(path: str) -> None:
    import os

    raw_worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), 0, path)


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "raw":
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(raw_worker, args=(2, port, path), nprocs=2, join=True)
    elif mode == "raw_env":
        raw_env_worker(path)
    elif mode == "fabric":
        from fabric_core import Fabric

        Fabric(strategy="ddp_spawn", devices=2, accelerator="cpu").launch(fabric_train, path)
    elif mode in ("script", "lightning"):
        if mode == "script":
            from fabric_core import Fabric
        else:
            from lightning_fabric import Fabric
        fabric = Fabric(strategy="ddp", devices=2, accelerator="cpu")
        fabric.launch()
        fabric_train(fabric, path)
    else:
        raise SystemExit(f"mode must be raw, raw_env, fabric, script or lightning, got {mode!r}")


if __name__ == "__main__":
    main()
