"""Fabric changes nothing about the numbers: 1000 steps with Fabric and with raw PyTorch end bit-identical.

Single process (32-true and bf16-mixed), and two processes: Fabric's ``ddp_spawn`` against
``torch.multiprocessing`` + gloo ``DistributedDataParallel`` written by hand, both sharding the same
shuffled data with a ``DistributedSampler``.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

STEPS = 1000
BATCH = 8
WORLD_SIZE = 2


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def make_dataset(samples: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(samples, 16, generator=g)
    y = (x[:, :4].argmax(dim=1) + (x[:, 4] > 0).long()) % 4
    return TensorDataset(x, y)


def single_loader() -> DataLoader:
    # Its own generator: the shuffle order does not depend on who else draws from torch's global RNG.
    return DataLoader(make_dataset(800), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(2))


def train_steps(model: nn.Module, optimizer: Any, loader: Any, backward: Any, autocast: Any = nullcontext) -> None:
    step = 0
    while step < STEPS:
        for x, y in loader:
            with autocast():
                out = model(x)
            loss = nn.functional.cross_entropy(out.float(), y)
            optimizer.zero_grad()
            backward(loss)
            optimizer.step()
            step += 1
            if step == STEPS:
                return


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), f"{key} differs by up to {(a[key] - b[key]).abs().max().item():.3e}"


# ------------------------------------------------------------------------- single process
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_single_process_weights_are_bit_identical(precision: str) -> None:
    from fabric_core import Fabric

    torch.set_num_threads(1)
    mixed = precision == "bf16-mixed"

    model = make_model()
    optimizer = make_optimizer(model)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mixed else nullcontext
    train_steps(model, optimizer, single_loader(), lambda loss: loss.backward(), autocast)

    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    f_model = make_model()
    f_model, f_optimizer = fabric.setup(f_model, make_optimizer(f_model))
    train_steps(f_model, f_optimizer, fabric.setup_dataloaders(single_loader()), fabric.backward)

    assert_identical(model.state_dict(), f_model.state_dict())
    assert optimizer.state_dict()["state"].keys() == f_optimizer.state_dict()["state"].keys()
    for key, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(value, f_optimizer.state_dict()["state"][key][name]), (key, name)


def test_the_comparison_is_sensitive() -> None:
    """A different learning rate for 1000 steps must show up, or the parity tests prove nothing."""
    torch.set_num_threads(1)
    a, b = make_model(), make_model()
    opt_a, opt_b = make_optimizer(a), torch.optim.AdamW(b.parameters(), lr=1.0001e-3, weight_decay=0.01)
    train_steps(a, opt_a, single_loader(), lambda loss: loss.backward())
    train_steps(b, opt_b, single_loader(), lambda loss: loss.backward())
    with pytest.raises(AssertionError):
        assert_identical(a.state_dict(), b.state_dict())


# ---------------------------------------------------------------------------- two processes
def ddp_dataset() -> TensorDataset:
    return make_dataset(WORLD_SIZE * BATCH * 50)  # 50 batches per rank per epoch: 20 epochs


class _EpochLoader:
    """The raw reference's epoch loop: ``set_epoch`` before each pass, as every DDP tutorial does."""

    def __init__(self, loader: DataLoader, sampler: DistributedSampler) -> None:
        self.loader, self.sampler, self.epoch = loader, sampler, 0

    def __iter__(self) -> Any:
        self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)


def _raw_ddp_worker(rank: int, rendezvous: str, result: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE)
    model = make_model()
    ddp_model = DistributedDataParallel(model)
    optimizer = make_optimizer(ddp_model)
    dataset = ddp_dataset()
    sampler = DistributedSampler(dataset, num_replicas=WORLD_SIZE, rank=rank, shuffle=True, seed=0)
    loader = _EpochLoader(DataLoader(dataset, batch_size=BATCH, sampler=sampler), sampler)
    train_steps(ddp_model, optimizer, loader, lambda loss: loss.backward())
    if rank == 0:
        torch.save(model.state_dict(), result)
    dist.barrier()
    dist.destroy_process_group()


def _fabric_ddp_train(fabric: Any, result: str) -> None:
    torch.set_num_threads(1)
    model = make_model()
    model, optimizer = fabric.setup(model, make_optimizer(model))
    loader = fabric.setup_dataloaders(DataLoader(ddp_dataset(), batch_size=BATCH, shuffle=True))
    train_steps(model, optimizer, loader, fabric.backward)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flat = torch.cat([v.flatten() for v in state.values()])
    gathered = fabric.all_gather(flat)
    assert torch.equal(gathered[0], gathered[1]), "the two ranks diverged"
    if fabric.global_rank == 0:
        torch.save(state, result)  # written like the reference's, so both are read back the same way


@pytest.mark.multiprocess
def test_two_process_ddp_weights_are_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp
    from fabric_core import Fabric

    monkeypatch.delenv("FABRIC_GLOBAL_SEED", raising=False)  # Fabric's sampler seed is then 0, like the reference
    raw_result, fabric_result = tmp_path / "raw.pt", tmp_path / "fabric.pt"
    # A file rendezvous: no port picked here and bound later by a worker (another process may take it meanwhile).
    rendezvous = str(tmp_path / "rendezvous")
    mp.spawn(_raw_ddp_worker, args=(rendezvous, str(raw_result)), nprocs=WORLD_SIZE, join=True)
    Fabric(strategy="ddp_spawn", devices=WORLD_SIZE, accelerator="cpu").launch(_fabric_ddp_train, str(fabric_result))

    raw_state = torch.load(raw_result, weights_only=True)
    fabric_state = torch.load(fabric_result, weights_only=True)

    assert_identical(raw_state, fabric_state)
    assert not torch.equal(raw_state["0.weight"], make_model().state_dict()["0.weight"])  # it did train
