"""16-mixed's scaler logic, run for real with torch's CPU GradScaler (the CUDA one needs a GPU)."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from cuda_fakes import forbid_cuda_init
from fabric_core.checkpoint.state import convert_state_for_saving, restore_state
from fabric_core.strategies.single_device import SingleDeviceStrategy
from fabric_cuda import CUDAMixedPrecision

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


def make(init_scale: float = 1024.0, stall_warning_after: int = 3) -> tuple[CUDAMixedPrecision, SingleDeviceStrategy]:
    precision = CUDAMixedPrecision(
        scaler=torch.amp.GradScaler("cpu", init_scale=init_scale), stall_warning_after=stall_warning_after
    )
    return precision, SingleDeviceStrategy(device="cpu", precision=precision)


def model_and_optimizer(lr: float = 0.1) -> tuple[torch.nn.Linear, torch.optim.SGD]:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -0.5]]))
    return model, torch.optim.SGD(model.parameters(), lr=lr)


def train_step(
    strategy: SingleDeviceStrategy, model: torch.nn.Module, optimizer: torch.optim.Optimizer, poison: bool
) -> None:
    loss = model(X).sum() * (float("inf") if poison else 1.0)
    strategy.backward(loss, model)
    strategy.optimizer_step(optimizer)
    optimizer.zero_grad()


def test_scaler_is_created_lazily_without_touching_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_cuda_init(monkeypatch)
    precision = CUDAMixedPrecision()
    assert precision._scaler is None
    assert (precision.dtype, precision.device_type, precision.name) == (torch.float16, "cuda", "16-mixed")
    assert pickle.loads(pickle.dumps(precision))._scaler is None  # spawned workers build their own


def test_overflowing_steps_are_skipped_counted_and_reported_once_per_streak() -> None:
    precision, strategy = make(stall_warning_after=3)
    model, optimizer = model_and_optimizer()
    before = model.weight.detach().clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            train_step(strategy, model, optimizer, poison=True)
        assert not caught  # a couple of skips is calibration, not a problem
        train_step(strategy, model, optimizer, poison=True)
        train_step(strategy, model, optimizer, poison=True)
    stalls = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(stalls) == 1
    assert "last 3 optimizer steps were skipped" in str(stalls[0].message)
    assert precision.skipped_steps == 4 and precision.consecutive_skipped_steps == 4
    assert torch.equal(model.weight, before)  # no step was taken
    assert precision.scaler.get_scale() == 1024.0 / 2**4

    train_step(strategy, model, optimizer, poison=False)
    assert precision.consecutive_skipped_steps == 0 and precision.skipped_steps == 4
    assert not torch.equal(model.weight, before)
    with pytest.warns(RuntimeWarning, match="last 3 optimizer steps"):
        for _ in range(3):
            train_step(strategy, model, optimizer, poison=True)


def test_clipping_sees_unscaled_gradients_and_the_step_unscales_once() -> None:
    precision, strategy = make(init_scale=1024.0)
    model, optimizer = model_and_optimizer(lr=0.1)
    start = model.weight.detach().clone()
    true_grad = X.sum(0, keepdim=True)  # d/dw sum(X @ w.T)
    strategy.backward(model(X).sum(), model)
    assert torch.allclose(model.weight.grad, true_grad * 1024.0)  # scaled by the loss scale
    norm = strategy.clip_gradients_norm(model, optimizer, max_norm=1.0)
    assert torch.isclose(norm, true_grad.norm())
    clipped = true_grad / true_grad.norm()
    assert torch.allclose(model.weight.grad, clipped, atol=1e-5)
    strategy.optimizer_step(optimizer)
    assert torch.allclose(model.weight, start - 0.1 * clipped, atol=1e-5)
    assert precision.skipped_steps == 0


def test_scaler_state_round_trips_through_a_checkpoint() -> None:
    precision, strategy = make(init_scale=4096.0)
    model, optimizer = model_and_optimizer()
    for poison in (True, True, False):
        train_step(strategy, model, optimizer, poison=poison)
    saved = convert_state_for_saving(strategy, {"model": model, "precision": precision})
    assert saved["precision"]["scaler"]["scale"] == 1024.0
    assert saved["precision"]["scaler"]["_growth_tracker"] == 1

    restored, restored_strategy = make(init_scale=65536.0)
    restore_state(restored_strategy, saved, {"precision": restored}, strict=True, path="memory")
    assert restored.scaler.get_scale() == 1024.0
    assert restored.scaler.state_dict() == precision.scaler.state_dict()
    assert restored.skipped_steps == precision.skipped_steps == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_stall_threshold_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="stall_warning_after must be a positive int"):
        CUDAMixedPrecision(stall_warning_after=bad)  # type: ignore[arg-type]
