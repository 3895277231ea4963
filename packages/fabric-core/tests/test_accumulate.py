"""fabric.accumulate in one process: window arithmetic, the optimizer held, losses scaled, bad input refused."""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class CountingSGD(torch.optim.SGD):
    """A real SGD that counts how often it is really asked to step and to clear gradients."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps = self.zeros = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.zeros += 1
        super().zero_grad(set_to_none)


def _data(n: int = 22) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(n, 3), torch.randn(n, 2)


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _reference(x: torch.Tensor, y: torch.Tensor, windows: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for start, stop in windows:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x[start:stop]), y[start:stop]).backward()
        optimizer.step()
    return model.state_dict()


def _assert_same(module: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6)


def _setup(fabric: Fabric) -> tuple[nn.Module, nn.Module, CountingSGD]:
    module = _model()
    inner = CountingSGD(module.parameters(), lr=0.1)
    model, optimizer = fabric.setup(module, inner)
    return module, model, optimizer


def test_a_fabric_dataloader_ends_each_epoch_with_a_short_window() -> None:
    x, y = _data(22)  # 11 batches of 2: windows of 4, 4 and 3
    fabric = Fabric(accelerator="cpu", devices=1)
    module, model, optimizer = _setup(fabric)
    with pytest.raises(ValueError, match="remaining must be an int >= 1"):
        with fabric.accumulate(model, steps=2, remaining=0):
            pass
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=2))
    seen = []
    for _ in range(2):
        for bx, by in loader:
            with fabric.accumulate(model, steps=4, dataloader=loader) as step:
                fabric.backward(nn.functional.mse_loss(model(bx), by))
                optimizer.step()
                optimizer.zero_grad()
            seen.append((step.index, step.window, step.boundary))
    windows = [(0, 8), (8, 16), (16, 22)] * 2
    _assert_same(module, _reference(x, y, windows))
    assert optimizer.optimizer.steps == optimizer.optimizer.zeros == 6
    assert seen[:11] == [(1, 4, False), (2, 4, False), (3, 4, False), (4, 4, True)] * 2 + [
        (1, 3, False),
        (2, 3, False),
        (3, 3, True),
    ]


def test_remaining_gives_the_short_window_for_a_plain_list() -> None:
    x, y = _data(10)
    batches = [(x[i : i + 2], y[i : i + 2]) for i in range(0, 10, 2)]  # 5 micro-batches, windows of 3 and 2
    fabric = Fabric(accelerator="cpu", devices=1)
    module, model, optimizer = _setup(fabric)
    for i, (bx, by) in enumerate(batches):
        with fabric.accumulate(model, steps=3, remaining=len(batches) - i):
            fabric.backward(nn.functional.mse_loss(model(bx), by))
            optimizer.step()
            optimizer.zero_grad()
    _assert_same(module, _reference(x, y, [(0, 6), (6, 10)]))
    assert optimizer.optimizer.steps == 2


def test_without_a_loader_windows_are_always_full_and_carry_over() -> None:
    x, y = _data(12)
    fabric = Fabric(accelerator="cpu", devices=1)
    module, model, optimizer = _setup(fabric)
    for _ in range(2):  # two "epochs" of 3 micro-batches with steps=2: windows straddle the epochs
        for i in range(0, 6, 2):
            with fabric.accumulate(model, steps=2):
                fabric.backward(nn.functional.mse_loss(model(x[i : i + 2]), y[i : i + 2]))
                optimizer.step()
                optimizer.zero_grad()
    assert optimizer.optimizer.steps == 3
    _assert_same(module, _reference(torch.cat([x[:6], x[:6]]), torch.cat([y[:6], y[:6]]), [(0, 4), (4, 8), (8, 12)]))


def test_outside_the_context_nothing_is_left_swapped() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    _, model, optimizer = _setup(fabric)
    step, zero_grad = optimizer.__dict__.get("step"), optimizer.__dict__.get("zero_grad")
    with fabric.accumulate(model, steps=2) as first:
        assert not first.boundary
        assert "backward" in fabric.__dict__  # scaled while open
        optimizer.step()
    assert optimizer.optimizer.steps == 0
    assert optimizer.__dict__.get("step") is step and optimizer.__dict__.get("zero_grad") is zero_grad
    assert "backward" not in fabric.__dict__
    optimizer.step()  # outside any window: a real step
    assert optimizer.optimizer.steps == 1


def test_the_loss_is_scaled_by_the_window_length() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    module, model, _ = _setup(fabric)
    bx = torch.ones(1, 3)
    with fabric.accumulate(model, steps=4):
        fabric.backward(model(bx).sum())
    scaled = module[2].bias.grad.clone()
    module.zero_grad()
    model(bx).sum().backward()
    torch.testing.assert_close(scaled, module[2].bias.grad / 4)


def test_two_models_hold_only_their_own_optimizers() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    _, model_a, opt_a = _setup(fabric)
    _, _, opt_b = _setup(fabric)
    with fabric.accumulate(model_a, steps=2):
        opt_a.step()
        opt_b.step()
    assert (opt_a.optimizer.steps, opt_b.optimizer.steps) == (0, 1)


def test_bad_input_is_refused_clearly() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    module, model, _ = _setup(fabric)
    with pytest.raises(TypeError, match="returned by fabric.setup"):
        with fabric.accumulate(module, steps=2):
            pass
    for steps in (0, 1.5, True):
        with pytest.raises(ValueError, match="steps must be an int >= 1"):
            with fabric.accumulate(model, steps=steps):
                pass
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.zeros(4, 3)), batch_size=2))
    with pytest.raises(ValueError, match="not both"):
        with fabric.accumulate(model, steps=2, dataloader=loader, remaining=3):
            pass
    with pytest.raises(RuntimeError, match="not being iterated"):
        with fabric.accumulate(model, steps=2, dataloader=loader):
            pass
    with pytest.raises(TypeError, match="setup_dataloaders"):
        with fabric.accumulate(model, steps=2, dataloader=[1, 2]):
            pass
    with pytest.raises(RuntimeError, match="cannot be nested"):
        with fabric.accumulate(model, steps=2), fabric.accumulate(model, steps=2):
            pass
