"""Two-process training, run by test_cuda_multi_gpu.py as a script (spawned workers re-import it).

python distributed_train.py OUT.json --strategy ddp_spawn --precision 16-mixed [--accelerator cuda]

Rank 0 writes what the test checks to OUT.json: losses, the process-group backend, each rank's
device, and whether the ranks ended with identical parameters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from fabric_core import Fabric
from torch.utils.data import DataLoader, TensorDataset


def make_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=generator)
    y = x @ torch.randn(16, 1, generator=generator) + 0.01 * torch.randn(512, 1, generator=generator)
    return TensorDataset(x, y)


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def train(fabric: Fabric, out: str, sharded: bool) -> dict[str, Any]:
    fabric.seed_everything(1234)
    if sharded:
        model = fabric.setup_module(make_model())
        optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    else:
        module = make_model()
        model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9))
    loader = fabric.setup_dataloaders(DataLoader(make_data(), batch_size=32, shuffle=True))
    losses: list[float] = []
    for epoch in range(6):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(fabric.all_reduce(loss.detach(), reduce_op="mean")))
    ranks = fabric.all_gather(torch.tensor([fabric.global_rank], device=fabric.device))
    devices = fabric.all_gather(
        torch.tensor([fabric.device.index if fabric.device.index is not None else -1], device=fabric.device)
    )
    state = (
        {k: v.detach().float().flatten() for k, v in fabric.strategy.get_module_state_dict(model.module).items()}
        if not sharded
        else None
    )
    same = True
    if state is not None:
        flat = torch.cat(list(state.values()))
        gathered = fabric.all_gather(flat)
        same = bool(torch.equal(gathered[0], gathered[1]))
    result = {
        "world_size": fabric.world_size,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "ranks": ranks.flatten().tolist(),
        "devices": devices.flatten().tolist(),
        "first_losses": losses[:3],
        "last_losses": losses[-3:],
        "same_parameters": same,
        "skipped_steps": getattr(fabric.strategy.precision, "skipped_steps", 0),
    }
    if fabric.global_rank == 0:
        Path(out).write_text(json.dumps(result))
    fabric.barrier()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--strategy", default="ddp_spawn")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--accelerator", default="cuda")
    args = parser.parse_args()
    fabric = Fabric(accelerator=args.accelerator, strategy=args.strategy, devices=2, precision=args.precision)
    if args.strategy == "ddp_fork":
        # The reason counting uses NVML: resolving the plan must leave the parent fork-safe.
        assert not torch.cuda.is_initialized(), "plan resolution initialised CUDA before forking"
    fabric.launch(train, args.out, args.strategy.startswith("fsdp"))


if __name__ == "__main__":
    main()
