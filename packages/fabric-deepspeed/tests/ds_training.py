"""The small deterministic training run every multi-process test uses (imported by spawned workers too)."""

from __future__ import annotations

import os
from typing import Any

import torch
from fabric_core import Fabric
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

IN, HIDDEN, OUT = 12, 32, 3
SAMPLES, BATCH = 64, 8  # 4 batches per rank per epoch with 2 ranks
# Small parameters stay whole under ZeRO-3 by default (persistence threshold); the tests want them sharded.
STAGE3_SHARD_ALL = {"zero_optimization": {"stage3_param_persistence_threshold": 0}}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(IN, HIDDEN)
        self.out = nn.Linear(HIDDEN, OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randn(SAMPLES, IN, generator=generator)
    w = torch.randn(IN, OUT, generator=generator)
    y = torch.sin(x @ w)
    return TensorDataset(x, y)


def initial_state() -> dict[str, torch.Tensor]:
    """The same starting weights for every strategy (ZeRO-3 creates its model differently)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in Net().state_dict().items()}


def make_model() -> nn.Module:
    model = Net()
    model.load_state_dict(initial_state())
    return model


def train(
    fabric: Fabric,
    steps: int = 12,
    accumulate: int = 1,
    lr: float = 0.05,
    optimizer: str = "sgd",
    model: nn.Module | None = None,
    clip: float | None = None,
    engine_accumulates: bool = False,
    plain_backward: bool = False,
) -> list[float]:
    """Train for ``steps`` optimizer steps; returns the loss of each step averaged over ranks and micro-batches.

    ``accumulate`` micro-batches per step, the DDP way (several backwards, one step); with
    ``engine_accumulates`` the loop steps after every micro-batch and DeepSpeed decides when to update
    (``gradient_accumulation_steps`` in its config). ``plain_backward``: ``loss.backward()`` instead of
    ``fabric.backward(loss)``.
    """
    model = make_model() if model is None else model
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=lr)
    )
    model, opt = fabric.setup(model, opt)
    loader = fabric.setup_dataloaders(DataLoader(dataset(), batch_size=BATCH, shuffle=False))
    losses: list[float] = []
    batches = iter(_cycle(loader))
    for _ in range(steps):
        total = 0.0
        for micro in range(accumulate):
            x, y = next(batches)
            if engine_accumulates:
                loss = nn.functional.mse_loss(model(x), y)
                fabric.backward(loss)  # the engine divides by gradient_accumulation_steps
                opt.step()
                opt.zero_grad()
            else:
                with fabric.no_backward_sync(model, enabled=micro < accumulate - 1):
                    loss = nn.functional.mse_loss(model(x), y)
                    if plain_backward:
                        (loss / accumulate).backward()
                    else:
                        fabric.backward(loss / accumulate)
            total += loss.detach().float().item() / accumulate
        if not engine_accumulates:
            if clip is not None:
                fabric.clip_gradients(model, opt, max_norm=clip)
            opt.step()
            opt.zero_grad()
        losses.append(float(fabric.all_reduce(torch.tensor(total), reduce_op="mean")))
    return losses


def full_batch(
    fabric: Fabric, model: nn.Module, steps: int = 12, lr: float = 0.05
) -> tuple[list[float], Any, torch.Tensor]:
    """Gradient descent on this rank's half of the data; returns (losses, wrapped model, last output)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model, opt = fabric.setup(model, opt)
    x, y = dataset().tensors
    x, y = x[fabric.global_rank :: 2].to(fabric.device), y[fabric.global_rank :: 2].to(fabric.device)
    losses = []
    for _ in range(steps):
        out = model(x)
        loss = nn.functional.mse_loss(out.float(), y)
        fabric.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(float(fabric.all_reduce(loss.detach())))
    return losses, model, out


def _cycle(loader: Any) -> Any:
    while True:
        yield from loader


def join_as_launched(fabric: Fabric) -> None:
    """Inside a launched worker: further ``Fabric`` objects join this job instead of launching another.

    This is what torchrun or ``fabric run`` tell a process through the environment; here it lets one
    pair of processes try several strategies on the process group the first one created.
    """
    os.environ.update(
        {
            "FABRIC_LAUNCHED": "1",
            "LOCAL_RANK": str(fabric.local_rank),
            "RANK": str(fabric.global_rank),
            "WORLD_SIZE": str(fabric.world_size),
            "LOCAL_WORLD_SIZE": str(fabric.world_size),
        }
    )


def nested_fabric(strategy: Any, precision: str = "32-true", accelerator: str = "cpu") -> Fabric:
    fabric = Fabric(accelerator=accelerator, devices=2, strategy=strategy, precision=precision)
    fabric.launch()
    return fabric
