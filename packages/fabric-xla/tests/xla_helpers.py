"""Shared by the fabric-xla tests: a small regression task, its plain-torch CPU reference, skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).parent
#: fp32 on the XLA CPU device against plain torch on the CPU: same math, different kernels/fusions.
FP32_ATOL = 1e-5
FP32_RTOL = 1e-4


def torch_xla_problem() -> str | None:
    """Why torch_xla cannot be used in this environment, or ``None`` when it imports."""
    from fabric_xla.probe import installation_problem

    problem = installation_problem()
    if problem is not None:
        return problem
    try:
        import torch_xla
        import torch_xla.core.xla_model  # noqa: F401
    except Exception as err:  # a broken install must skip, not error, outside the xla sessions
        return f"torch_xla does not import: {err}"
    return None


def requires_xla() -> pytest.MarkDecorator:
    problem = torch_xla_problem()
    reason = f"needs a working torch_xla: {problem.split('. ')[0]}" if problem else ""
    return pytest.mark.skipif(problem is not None, reason=reason)


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def make_data(n: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    w = torch.randn(6, 2, generator=generator)
    return x, 0.3 * x @ w + 0.01 * torch.randn(n, 2, generator=generator)


def make_loader(n: int = 48, batch_size: int = 8) -> DataLoader:
    x, y = make_data(n)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def train_reference(epochs: int = 3, n: int = 48, batch_size: int = 8, lr: float = 0.05) -> tuple[list[float], dict]:
    """Plain PyTorch on the CPU: the losses and final weights the XLA runs must reproduce."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(epochs):
        for x, y in make_loader(n, batch_size):
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_fabric(
    fabric: Any, epochs: int = 3, n: int = 48, batch_size: int = 8, lr: float = 0.05, parameters: Any = None
):
    """The same training through Fabric; returns losses, the set-up objects and the loader."""
    model = make_model()
    if parameters is None:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        model, optimizer = fabric.setup(model, optimizer)
    else:
        model = fabric.setup_module(model)
        optimizer = fabric.setup_optimizers(torch.optim.SGD(parameters(model), lr=lr, momentum=0.9))
    loader = fabric.setup_dataloaders(make_loader(n, batch_size))
    losses = []
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses, model, optimizer, loader


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().float() for k, v in module.state_dict().items()}


def assert_close_states(actual: dict, expected: dict, atol: float = FP32_ATOL, rtol: float = FP32_RTOL) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=rtol, msg=f"parameter {key}")


def run_scenario(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> dict[str, Any]:
    """Run ``scenarios/<name>.py`` in a fresh interpreter (SPMD and launching need a fresh XLA runtime).

    The script prints one line ``RESULT <json>``; its output is shown when it fails.
    """
    script = HERE / "scenarios" / f"{name}.py"
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, str(script), *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"scenario {name} {args} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
            f"--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def emit(result: dict[str, Any]) -> None:
    """What a scenario script ends with."""
    print("RESULT " + json.dumps(result), flush=True)
