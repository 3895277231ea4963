"""Per-step overhead of a Fabric training loop against the same loop in raw PyTorch.

One torch thread, the same MLP, the same batch every step (no data loading), SGD. Contenders:
raw PyTorch, fabric, and Lightning Fabric and HF Accelerate when they are installed. All run in
one process, interleaved round by round; the ratio is taken within each round and the median over
rounds is reported.

Targets for fabric: at most 3% over raw on the tiny MLP (where per-step overhead shows most) and
0.5% on the mid-size MLP. ``--device cuda`` runs the same on a GPU and adds peak memory
(see bench_step_gpu.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Samples, emit, fmt_time, header, interleave, table, verdict

Step = Callable[[], None]


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    batch: int
    target: float  # allowed ratio over raw for fabric


CONFIGS = (
    Config("tiny MLP 32-32-32-10, batch 8", (32, 32, 32, 10), 8, 1.03),
    Config("mid MLP 784-1024-1024-10, batch 64", (784, 1024, 1024, 10), 64, 1.005),
)
PRECISIONS = {"cpu": ("32-true", "bf16-mixed"), "cuda": ("32-true", "bf16-mixed", "16-mixed")}


def make_model(sizes: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_batch(config: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(config.batch, config.sizes[0], generator=g)
    y = torch.randint(0, config.sizes[-1], (config.batch,), generator=g)
    return x.to(device), y.to(device)


# ---------------------------------------------------------------- the contenders
def raw_step(config: Config, precision: str, device: torch.device) -> Step:
    model = make_model(config.sizes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = make_batch(config, device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    loss_fn = nn.functional.cross_entropy

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext():
            out = model(x)
        loss = loss_fn(out.float() if dtype is not None else out, y)
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def fabric_step(config: Config, precision: str, device: torch.device) -> Step:
    from fabric_core import Fabric

    fabric = Fabric(accelerator=device.type, devices=1, precision=precision)
    model, optimizer = _rebind(fabric, config)
    x, y = make_batch(config, device)
    loss_fn = nn.functional.cross_entropy

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()

    return step


def _rebind(fabric: Any, config: Config) -> tuple[Any, Any]:
    """Set up a model and an optimizer over its own parameters (one call, as users write it)."""
    model = make_model(config.sizes)
    return fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1e-3))


def lightning_step(config: Config, precision: str, device: torch.device) -> Step:
    try:
        from lightning_fabric import Fabric as LightningFabric
    except ImportError:
        from lightning.fabric import Fabric as LightningFabric

    fabric = LightningFabric(accelerator=device.type, devices=1, precision=precision)
    model, optimizer = _rebind(fabric, config)
    x, y = make_batch(config, device)
    loss_fn = nn.functional.cross_entropy

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        fabric.backward(loss)
        optimizer.step()

    return step


def accelerate_step(config: Config, precision: str, device: torch.device) -> Step:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # one Accelerator per configuration in this process
    mixed = {"bf16-mixed": "bf16", "16-mixed": "fp16"}.get(precision, "no")
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=mixed)
    model = make_model(config.sizes)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = make_batch(config, device)
    loss_fn = nn.functional.cross_entropy

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        accelerator.backward(loss)
        optimizer.step()

    return step


def available_contenders() -> dict[str, Callable[[Config, str, torch.device], Step]]:
    contenders: dict[str, Callable[[Config, str, torch.device], Step]] = {"raw torch": raw_step, "fabric": fabric_step}
    for name, module, builder in (
        ("lightning fabric", "lightning_fabric", lightning_step),
        ("accelerate", "accelerate", accelerate_step),
    ):
        try:
            __import__(module)
        except ImportError:
            if module == "lightning_fabric":
                try:
                    __import__("lightning.fabric")
                except ImportError:
                    continue
            else:
                continue
        contenders[name] = builder
    return contenders


# ------------------------------------------------------------------ measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(step: Step, steps: int, device: torch.device) -> Callable[[], float]:
    def measure() -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        return (time.perf_counter() - start) / steps

    return measure


def calibrate(step: Step, seconds: float, device: torch.device) -> int:
    """How many steps take about ``seconds`` (after a warm-up)."""
    for _ in range(5):
        step()
    n = 1
    while True:
        t = timer(step, n, device)()
        if t * n >= 0.05 or n >= 1 << 16:
            return max(3, int(seconds / t))
        n *= 4


def peak_memory(step: Step, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def run(
    rounds: int,
    seconds: float,
    device: torch.device,
    configs: tuple[Config, ...] = CONFIGS,
    precisions: tuple[str, ...] = (),
) -> list[list[object]]:
    contenders = available_contenders()
    rows: list[list[object]] = []
    for config in configs:
        for precision in precisions or PRECISIONS[device.type]:
            steps: dict[str, Step] = {}
            for name, builder in contenders.items():
                try:
                    steps[name] = builder(config, precision, device)
                except Exception as error:  # a peer that cannot run this combination is reported, not fatal
                    rows.append(
                        [
                            f"{config.name}, {precision}",
                            name,
                            "n/a",
                            *[""] * (5 if device.type == "cpu" else 6),
                            f"({type(error).__name__}: {str(error)[:60]})",
                        ]
                    )
            n = calibrate(steps["raw torch"], seconds, device)
            for step in steps.values():
                for _ in range(3):
                    step()
            memory = {name: peak_memory(step, device) for name, step in steps.items()}
            samples: Samples = interleave({name: timer(step, n, device) for name, step in steps.items()}, rounds)
            base = samples.median("raw torch")
            for name in steps:
                ratio = samples.ratio(name, "raw torch")
                over = (ratio - 1) * base
                target = f"<= {config.target:.3f}x" if name == "fabric" else ""
                mark = verdict(ratio, config.target) if name == "fabric" else ""
                mem = f"{memory[name] / 2**20:.1f} MiB" if memory[name] is not None else None
                row = [
                    f"{config.name}, {precision}",
                    name,
                    fmt_time(samples.median(name)),
                    f"{ratio:.3f}x",
                    f"±{samples.ratio_spread(name, 'raw torch') * 100:.1f}%",
                    f"{over * 1e6:+.1f} us",
                    f"±{samples.spread(name) * 100:.1f}%",
                    f"{target} {mark}".strip(),
                ]
                if device.type == "cuda":
                    row.insert(7, mem)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--seconds", type=float, default=0.25, help="approximate duration of one sample (default 0.25)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of short samples (a smoke run, not a measurement)"
    )
    parser.add_argument("--config", action="append", choices=["tiny", "mid"], help="only this model size (repeatable)")
    parser.add_argument("--precision", action="append", help="only this precision (repeatable)")
    args = parser.parse_args(argv)
    rounds, seconds = (3, 0.05) if args.quick else (args.rounds, args.seconds)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    emit(
        header(
            f"Training-step overhead on {device.type.upper()} (median of {rounds} interleaved rounds, ratios within a round)",
            [f"torch threads: {torch.get_num_threads()}; optimizer SGD; the same batch every step"],
        )
    )
    columns = ["configuration", "contender", "step", "vs raw", "ratio spread", "overhead/step", "step spread", "target"]
    if device.type == "cuda":
        columns.insert(7, "peak memory")
    configs = tuple(c for c in CONFIGS if not args.config or c.name.split()[0] in args.config)
    emit(table(columns, run(rounds, seconds, device, configs, tuple(args.precision or ()))))
    emit(
        "vs raw: median over rounds of (contender step / raw step) in the same round; ratio spread: half the\n"
        "interquartile range of those per-round ratios. A difference smaller than the ratio spread is within the noise."
    )


if __name__ == "__main__":
    main()
