"""torch.compile through fabric.setup: Fabric's wrappers add no graph breaks and no recompilations.

Both orders users write are covered: compiling the model and then setting it up (Fabric keeps the
compiled module inside its wrapper), and compiling what ``fabric.setup`` returned (dynamo then traces
the wrapper's own forward too). ``backend="eager"`` keeps the test fast: graph breaks are decided
by dynamo's tracing, not by the backend.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from fabric_core import Fabric
from torch import nn
from torch._dynamo.utils import counters

PRECISIONS = ["32-true", "bf16-mixed"]


def _digits_model() -> nn.Module:
    """The model of examples/digits.py (8x8 images, 10 classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 8, 8, generator=generator), torch.randint(0, 10, (8,), generator=generator)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, backward, steps: int, autocast: bool) -> list[float]:
    x, y = _batch()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        backward(loss)
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compile_then_setup_trains_in_one_graph_like_the_hand_written_loop(precision: str) -> None:
    torch.manual_seed(0)
    hand_model = torch.compile(_digits_model(), backend="eager")
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=0.1)
    hand = _train(hand_model, hand_opt, lambda loss: loss.backward(), 4, autocast=precision == "bf16-mixed")
    hand_graphs = counters["stats"]["unique_graphs"]
    assert not counters["graph_break"]

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    model = torch.compile(_digits_model(), backend="eager")
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    ours = _train(model, optimizer, fabric.backward, 4, autocast=False)  # Fabric applies the precision itself

    assert dict(counters["graph_break"]) == {}, "Fabric's wrappers broke the graph"
    assert counters["stats"]["unique_graphs"] == hand_graphs == 1  # no recompilation from step to step
    assert ours == pytest.approx(hand, rel=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_compiling_what_setup_returned_traces_the_wrapper_without_breaks(precision: str) -> None:
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    model = fabric.setup(_digits_model())
    x, _ = _batch()

    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [str(reason.reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    for _ in range(3):
        out = compiled(x)
        fabric.backward(out.sum())
    assert out.dtype == torch.float32  # bf16-mixed still hands back the default dtype
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
