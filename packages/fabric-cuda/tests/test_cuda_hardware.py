"""On a real GPU: selection, fork safety, training in every precision, clipping, checkpoints, memory.

Run by the `cuda` nox leg (`-m cuda`); the root conftest skips these without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from fabric_core import Fabric
from fabric_cuda import CUDAAccelerator, CUDAMixedPrecision, find_usable_cuda_devices, num_cuda_devices
from torch.utils.data import DataLoader, TensorDataset

pytestmark = pytest.mark.cuda

SCRIPTS = Path(__file__).parent / "scripts"
PRECISIONS = ["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"]
PARAMETER_DTYPE = {
    "32-true": torch.float32,
    "16-mixed": torch.float32,
    "bf16-mixed": torch.float32,
    "bf16-true": torch.bfloat16,
    "16-true": torch.float16,
}


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def regression_data(n: int = 512) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=generator)
    y = x @ torch.randn(16, 1, generator=generator) + 0.01 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def skip_without_native_bf16(precision: str) -> None:
    if precision.startswith("bf16") and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{precision} needs a GPU with native bfloat16 (compute capability 8.0+)")


def bf16_native() -> bool:
    return torch.cuda.is_bf16_supported(including_emulation=False)


# ------------------------------------------------------------------------------ selection
def test_auto_selects_the_gpu_and_counts_like_torch() -> None:
    fabric = Fabric(accelerator="auto", devices=1)
    assert isinstance(fabric.accelerator, CUDAAccelerator)
    assert fabric.device == torch.device("cuda", 0)
    assert num_cuda_devices() == torch.cuda.device_count()


def test_count_follows_cuda_visible_devices() -> None:
    result = run_script("fork_after_plan.py", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert result["counted"] == result["torch_count"] == 1


def test_plan_resolution_keeps_the_process_fork_safe() -> None:
    result = run_script("fork_after_plan.py")
    assert result["available"] is True
    assert result["counted"] == result["torch_count"] >= 1
    assert result["device"] == "cuda:0"
    assert result["initialised_before_fork"] is False
    assert (result["child_sum"], result["child_exit"]) == (4.0, 0)


def test_find_usable_cuda_devices_returns_working_gpus() -> None:
    found = find_usable_cuda_devices(1)
    assert len(found) == 1 and 0 <= found[0] < torch.cuda.device_count()
    every = find_usable_cuda_devices(-1)
    assert every == list(range(torch.cuda.device_count()))  # a CI runner's GPUs are all free
    for index in every:
        assert torch.ones(1, device=torch.device("cuda", index)).item() == 1.0


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("precision", PRECISIONS)
def test_training_in_each_precision_reduces_the_loss(precision: str) -> None:
    skip_without_native_bf16(precision)
    fabric = Fabric(accelerator="cuda", devices=1, precision=precision)
    fabric.launch()
    fabric.seed_everything(7)
    module = mlp()
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9))
    assert all(p.device == torch.device("cuda", 0) for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {PARAMETER_DTYPE[precision]}
    loader = fabric.setup_dataloaders(DataLoader(regression_data(), batch_size=32, shuffle=True))
    losses = []
    for _ in range(4):
        for x, y in loader:
            assert x.device == torch.device("cuda", 0)
            output = model(x)
            assert output.dtype == torch.float32  # outputs come back in the default dtype
            loss = torch.nn.functional.mse_loss(output, y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.25 * first, f"{precision}: loss went from {first:.3f} to {last:.3f}"
    if precision == "16-mixed":
        scaler = fabric.strategy.precision.scaler
        assert isinstance(fabric.strategy.precision, CUDAMixedPrecision)
        assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
        assert fabric.strategy.precision.skipped_steps < len(losses) // 4


def test_bf16_on_a_gpu_without_native_support_warns() -> None:
    fabric = Fabric(accelerator="cuda", devices=1, precision="bf16-mixed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric.launch()
    emulated = [w for w in caught if "emulates it slowly" in str(w.message)]
    assert len(emulated) == (0 if bf16_native() else 1)


def test_tf32_hint_once_on_ampere_for_32_true() -> None:
    result = run_script("tf32_hint.py")
    ampere = result["capability"][0] >= 8
    assert result["hints"] == (1 if ampere else 0)  # two Fabrics, one hint
    assert run_script("tf32_hint.py", "high")["hints"] == 0  # the user chose already


def test_clip_gradients_sees_unscaled_float16_gradients() -> None:
    fabric = Fabric(accelerator="cuda", devices=1, precision="16-mixed")
    fabric.launch()
    module = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.25)
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]], device=fabric.device)
    true_grad = x.sum(0, keepdim=True)
    fabric.backward(model(x).sum())
    norm = fabric.clip_gradients(model, optimizer, max_norm=1.0)
    assert torch.isclose(norm, true_grad.norm(), rtol=1e-2)  # not multiplied by the loss scale (65536)
    clipped = true_grad / true_grad.norm()
    assert torch.allclose(module.weight.grad, clipped, rtol=1e-2, atol=1e-3)
    before = module.weight.detach().clone()
    optimizer.step()
    assert fabric.strategy.precision.skipped_steps == 0
    assert torch.allclose(module.weight, before - 0.1 * clipped, rtol=1e-2, atol=1e-3)  # unscaled exactly once


def test_checkpoint_round_trip_keeps_the_scaler_state(tmp_path: Path) -> None:
    def setup(fabric: Fabric) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        module = mlp()
        return fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9))

    fabric = Fabric(accelerator="cuda", devices=1, precision="16-mixed")
    fabric.launch()
    fabric.seed_everything(3)
    model, optimizer = setup(fabric)
    x, y = regression_data(64).tensors
    x, y = fabric.to_device((x, y))
    for step in range(6):
        loss = torch.nn.functional.mse_loss(model(x), y) * (float("inf") if step < 2 else 1.0)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    precision = fabric.strategy.precision
    assert precision.skipped_steps == 2 and precision.scaler.get_scale() == 2.0**14
    fabric.save(tmp_path / "ckpt.pt", {"model": model, "optimizer": optimizer, "precision": precision, "step": 6})

    resumed = Fabric(accelerator="cuda", devices=1, precision="16-mixed")
    resumed.launch()
    new_model, new_optimizer = setup(resumed)
    state = {"model": new_model, "optimizer": new_optimizer, "precision": resumed.strategy.precision}
    rest = resumed.load(tmp_path / "ckpt.pt", state)
    assert rest == {"step": 6}
    assert resumed.strategy.precision.scaler.get_scale() == 2.0**14
    assert resumed.strategy.precision.scaler.state_dict() == precision.scaler.state_dict()
    assert resumed.strategy.precision.skipped_steps == 2
    for old, new in zip(model.parameters(), new_model.parameters()):
        assert torch.equal(old, new)
    old_state, new_state = optimizer.state_dict()["state"], new_optimizer.state_dict()["state"]
    assert all(torch.equal(old_state[k]["momentum_buffer"], new_state[k]["momentum_buffer"]) for k in old_state)


# ------------------------------------------------------------------------------- memory
def _peak_of(loop_setup: str) -> int:
    """Peak bytes allocated above the starting point by 20 steps of the same loop, raw or through Fabric."""
    torch.manual_seed(0)
    device = torch.device("cuda", 0)
    data = [(torch.randn(64, 1024), torch.randn(64, 1024)) for _ in range(4)]
    module = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(8)])  # ~32 MiB of parameters
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    if loop_setup == "fabric":
        fabric = Fabric(accelerator="cuda", devices=1)
        fabric.launch()
        model, optimizer = fabric.setup(module, torch.optim.Adam(module.parameters(), lr=1e-4))
        backward = fabric.backward
        to_device = fabric.to_device
    else:
        model = module.to(device)
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)

        def backward(loss: torch.Tensor) -> None:
            loss.backward()

        def to_device(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return batch[0].to(device), batch[1].to(device)

    for step in range(20):
        x, y = to_device(data[step % len(data)])
        loss = torch.nn.functional.mse_loss(model(x), y)
        backward(loss)
        optimizer.step()
        optimizer.zero_grad()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated(device) - start
    del model, optimizer, module, loss
    torch.cuda.empty_cache()
    return peak


def test_peak_memory_is_not_above_raw_pytorch() -> None:
    _peak_of("raw")  # warm-up: cuBLAS workspaces and CUDA context are allocated once, outside both measurements
    raw = _peak_of("raw")
    fabric = _peak_of("fabric")
    slack = 1 << 20  # allocator rounding of small blocks (the loss scalar); one extra copy of the model is 32 MiB
    assert fabric <= raw + slack, f"Fabric peaked at {fabric / 2**20:.1f} MiB, raw PyTorch at {raw / 2**20:.1f} MiB"
