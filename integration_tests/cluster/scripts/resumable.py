"""A training loop that SLURM can preempt: on SIGUSR1/SIGTERM it saves, requeues its job and exits.

python resumable.py OUT TOTAL_STEPS PAUSE_AT: trains TOTAL_STEPS steps, resuming from OUT/checkpoint.pt
when it exists. A fresh run waits at step PAUSE_AT (0: never) until a signal arrives, so a test can
preempt it at a known step. Rank 0 writes the final weights to OUT/final.pt.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from fabric_core import Fabric
from fabric_core.environments.slurm import requeue_job

out, total, pause_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
fabric = Fabric(accelerator="cpu", strategy="ddp")
fabric.launch()
fabric.seed_everything(7)
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model, optimizer = fabric.setup(model, optimizer)
state = {"model": model, "optimizer": optimizer, "step": 0}
checkpoint = out / "checkpoint.pt"
resumed = checkpoint.exists()
if resumed:
    fabric.load(checkpoint, state)
restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
fabric.print(f"start at step {state['step']} (restart {restarts}, world size {fabric.world_size})")
while state["step"] < total:
    data = torch.Generator().manual_seed(100 * state["step"] + fabric.global_rank)
    x = torch.randn(8, 4, generator=data)
    loss = (model(x) - x[:, :2]).pow(2).mean()
    optimizer.zero_grad()
    fabric.backward(loss)
    optimizer.step()
    state["step"] += 1
    if state["step"] == pause_at and not resumed:
        fabric.barrier()
        if fabric.global_rank == 0:
            (out / "paused").write_text(os.environ.get("SLURM_JOB_ID", ""))
        while not fabric.requeue_requested:
            time.sleep(0.05)
    if fabric.requeue_requested:
        fabric.save(checkpoint, state)
        fabric.barrier()
        sys.stdout.write(f"rank {fabric.global_rank} saved at step {state['step']}\n")
        sys.stdout.flush()
        if fabric.global_rank == 0 and "SLURM_JOB_ID" in os.environ:
            fabric.print(f"requeued job {requeue_job()}")
        sys.exit(0)
if fabric.global_rank == 0:
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "final.pt")
fabric.print(f"finished at step {state['step']}")
