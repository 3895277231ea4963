"""Python calls per training step: fabric_core against the hand-written PyTorch for the same path.

Timing ratios on a shared 2-core machine move by several percent from run to run; the number of
Python-level function calls a step makes (counted with ``sys.setprofile``, "call" events) does not.
Each path is written twice, by hand and through Fabric, on the same small MLP, and both are counted
over the same steps after a warm-up (so that one-time set-up is not counted):

- 1 process: raw 32-bit (``loss.backward()``), ``torch.autocast`` bf16 (the hand-written bf16-mixed);
  with CUDA also float16 autocast with ``torch.amp.GradScaler`` (16-mixed);
- 2 processes over gloo (one torchrun job): ``DistributedDataParallel`` (ddp) and ``fully_shard`` (fsdp),
  and a DeepSpeed engine when fabric-deepspeed is installed;
- the data loader: calls per batch of a plain ``DataLoader`` against ``fabric.setup_dataloaders``
  (with a ``DistributedSampler`` in the 2-process job).

Target: at most +10 calls per step over the hand-written equivalent. ``FABRIC_BENCH_PEERS=1`` adds
Lightning Fabric and Accelerate columns where they are installed. ``--write-docs`` puts the table
into docs/pages/performance.md (between its ``bench_calls`` markers).

    python benchmarks/bench_calls.py [--write-docs] [--no-distributed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import emit, header, table, version_of  # noqa: E402

TARGET = 10  # calls per step over the hand-written equivalent
STEPS, WARMUP = 10, 3
DOCS_PAGE = HERE.parent / "docs" / "pages" / "performance.md"
BEGIN, END = "<!-- bench_calls:begin -->", "<!-- bench_calls:end -->"
PEERS = os.environ.get("FABRIC_BENCH_PEERS") == "1"

Row = dict[str, Any]  # {"path", "processes", "hand", "fabric", optional peer counts}


def count_calls(step: Callable[[], Any], steps: int = STEPS, warmup: int = WARMUP) -> float:
    """Python function calls per call of ``step`` (after ``warmup`` uncounted calls)."""
    for _ in range(warmup):
        step()
    calls = 0

    def profiler(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profiler)
    try:
        for _ in range(steps):
            step()
    finally:
        sys.setprofile(None)
    return calls / steps


def count_batches(loader: Any) -> float:
    """Python function calls per batch of one pass over ``loader`` (after one uncounted pass)."""
    batches = sum(1 for _ in loader)
    return count_calls(lambda: [None for _ in loader], steps=2, warmup=1) / batches


def _parts(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, torch.randn(16, 32), torch.randint(0, 10, (16,))


def _loader(sampler: Any = None) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randn(256, 32), torch.randint(0, 10, (256,)))
    return DataLoader(data, batch_size=16, sampler=sampler, shuffle=sampler is None)


def plain_step(model: Any, optimizer: Any, x: Any, y: Any, backward: Callable[[Any], None] | None = None) -> Callable:
    import torch.nn.functional as F

    def step() -> None:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if backward is None:
            loss.backward()
        else:
            backward(loss)
        optimizer.step()

    return step


def autocast_step(model: Any, optimizer: Any, x: Any, y: Any, dtype: Any, scaler: Any = None) -> Callable:
    """What a user writes for mixed precision by hand: autocast the forward, float32 output, scaled loss."""
    import torch
    import torch.nn.functional as F

    device = x.device.type

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast(device, dtype=dtype):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def fabric_step(precision: str, strategy: str = "auto", devices: int = 1, accelerator: str = "cpu") -> Callable:
    from fabric_core import Fabric

    fabric = Fabric(accelerator=accelerator, strategy=strategy, devices=devices, precision=precision)
    fabric.launch()
    model, optimizer, x, y = _parts()
    model, optimizer = fabric.setup(model, optimizer)
    return plain_step(model, optimizer, x.to(fabric.device), y.to(fabric.device), backward=fabric.backward)


def lightning_step(precision: str, strategy: str = "auto", devices: int = 1) -> Callable | None:
    try:
        from lightning_fabric import Fabric
    except ImportError:
        return None
    import warnings

    # Lightning notices a SLURM installation on the machine and says so; not about this measurement.
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=devices, precision=precision)
    fabric.launch()
    model, optimizer, x, y = _parts()
    model, optimizer = fabric.setup(model, optimizer)
    return plain_step(model, optimizer, x, y, backward=fabric.backward)


def accelerate_step(precision: str) -> Callable | None:
    try:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
    except ImportError:
        return None
    AcceleratorState._reset_state(reset_partial_state=True)  # its state is per process; each path needs its own
    accelerator = Accelerator(cpu=True, mixed_precision={"32-true": "no", "bf16-mixed": "bf16"}[precision])
    model, optimizer, x, y = _parts()
    model, optimizer = accelerator.prepare(model, optimizer)
    return plain_step(model, optimizer, x, y, backward=accelerator.backward)


def _peers(row: Row, precision: str, strategy: str = "auto", devices: int = 1) -> Row:
    if not PEERS:
        return row
    step = lightning_step(precision, strategy, devices)
    if step is not None:
        row["lightning"] = count_calls(step)
    if devices == 1:
        step = accelerate_step(precision)
        if step is not None:
            row["accelerate"] = count_calls(step)
    return row


def single_process_rows() -> list[Row]:
    import torch

    rows: list[Row] = []
    model, optimizer, x, y = _parts()
    hand = count_calls(plain_step(model, optimizer, x, y))
    rows.append(
        _peers(
            {"path": "32-true", "processes": 1, "hand": hand, "fabric": count_calls(fabric_step("32-true"))}, "32-true"
        )
    )
    model, optimizer, x, y = _parts()
    hand = count_calls(autocast_step(model, optimizer, x, y, torch.bfloat16))
    fabric = count_calls(fabric_step("bf16-mixed"))
    rows.append(_peers({"path": "bf16-mixed (autocast)", "processes": 1, "hand": hand, "fabric": fabric}, "bf16-mixed"))
    if torch.cuda.is_available():
        model, optimizer, x, y = _parts()
        model, x, y = model.cuda(), x.cuda(), y.cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        hand = count_calls(autocast_step(model, optimizer, x, y, torch.float16, scaler=torch.amp.GradScaler("cuda")))
        fabric = count_calls(fabric_step("16-mixed", accelerator="cuda"))
        rows.append({"path": "16-mixed (GradScaler)", "processes": 1, "hand": hand, "fabric": fabric})

    from fabric_core import Fabric

    hand = count_batches(_loader())
    fabric = count_batches(Fabric(accelerator="cpu", devices=1).setup_dataloaders(_loader()))
    rows.append({"path": "data loader (per batch)", "processes": 1, "hand": hand, "fabric": fabric})
    return rows


def distributed_worker(result_file: str) -> None:
    """Run under torchrun with 2 processes: Fabric sets up the process group, the hand-written paths reuse it."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    rows: list[Row] = []
    fabric_ddp = fabric_step("32-true", strategy="ddp", devices=2)  # initialises the default process group
    model, _, x, y = _parts()
    ddp = DistributedDataParallel(model)
    hand = count_calls(plain_step(ddp, torch.optim.AdamW(ddp.parameters(), lr=1e-3), x, y))
    rows.append(
        _peers({"path": "ddp", "processes": 2, "hand": hand, "fabric": count_calls(fabric_ddp)}, "32-true", "ddp", 2)
    )

    from torch.distributed.fsdp import fully_shard

    model, _, x, y = _parts()
    # Fabric's FULL_SHARD reshards the root after forward too (torch's default, None, keeps the root gathered):
    # the same setting here, so the table shows the wrappers' calls, not one all-gather more or less.
    fully_shard(model, reshard_after_forward=True)
    hand = count_calls(plain_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3), x, y))
    fabric = count_calls(fabric_step("32-true", strategy="fsdp", devices=2))
    rows.append({"path": "fsdp (fully_shard)", "processes": 2, "hand": hand, "fabric": fabric})

    if os.environ.get("FABRIC_BENCH_DEEPSPEED") == "1":
        rows.append(_deepspeed_row())

    from fabric_core import Fabric

    dataset_loader = _loader()
    sampler = DistributedSampler(dataset_loader.dataset, shuffle=True)
    hand = count_batches(_loader(sampler))
    fabric = count_batches(Fabric(accelerator="cpu", strategy="ddp", devices=2).setup_dataloaders(_loader()))
    rows.append({"path": "data loader (per batch)", "processes": 2, "hand": hand, "fabric": fabric})
    if dist.get_rank() == 0:
        Path(result_file).write_text(json.dumps(rows))
    dist.barrier()


def _deepspeed_row() -> Row:
    """The loop DeepSpeed documents (forward, ``engine.backward``, ``engine.step``) on the engine config
    that Fabric builds for ``deepspeed_stage_1``: a different config takes different paths inside the
    engine (gradient clipping, accumulation, logging), which would be counted as Fabric's."""
    import copy

    import deepspeed
    import torch.nn.functional as F
    from fabric_deepspeed import DeepSpeedStrategy

    config = copy.deepcopy(DeepSpeedStrategy(stage=1).config)
    model, optimizer, x, y = _parts()
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

    def hand_step() -> None:
        loss = F.cross_entropy(engine(x), y)
        engine.backward(loss)
        engine.step()

    hand = count_calls(hand_step)
    fabric = count_calls(fabric_step("32-true", strategy="deepspeed_stage_1", devices=2))
    return {"path": "deepspeed (ZeRO 1 engine)", "processes": 2, "hand": hand, "fabric": fabric}


def distributed_rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "rows.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        command += [__file__, "--worker", str(result)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0 or not result.exists():
            raise RuntimeError(f"the 2-process job failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return json.loads(result.read_text())


def render(rows: list[Row]) -> str:
    peers = [p for p in ("lightning", "accelerate") if any(p in r for r in rows)]
    columns = ["path", "processes", "hand-written", "fabric_core", "over", f"target <= +{TARGET}"]
    columns += [{"lightning": "Lightning Fabric", "accelerate": "Accelerate"}[p] for p in peers]
    body = []
    for r in rows:
        over = r["fabric"] - r["hand"]
        cells = [r["path"], r["processes"], f"{r['hand']:.0f}", f"{r['fabric']:.0f}", f"{over:+.0f}"]
        cells.append("PASS" if over <= TARGET else "MISS")
        cells += [f"{r[p]:.0f} ({r[p] - r['hand']:+.0f})" if p in r else "-" for p in peers]
        body.append(cells)
    return table(columns, body)


def markdown(rows: list[Row]) -> str:
    peers = [p for p in ("lightning", "accelerate") if any(p in r for r in rows)]
    head = ["Path", "Processes", "Hand-written", "fabric_core", "Over"]
    head += [{"lightning": "Lightning Fabric", "accelerate": "Accelerate"}[p] for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [
            r["path"],
            str(r["processes"]),
            f"{r['hand']:.0f}",
            f"{r['fabric']:.0f}",
            f"{r['fabric'] - r['hand']:+.0f}",
        ]
        cells += [f"{r[p]:.0f} ({r[p] - r['hand']:+.0f})" if p in r else "-" for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    versions = ", ".join(f"{d} {version_of(d)}" for d in ("torch", "fabric-core") if version_of(d))
    return "\n".join(
        [*lines, "", f"Calls per step (data loader: per batch), counted with `sys.setprofile`; {versions}."]
    )


def write_docs(rows: list[Row], page: Path = DOCS_PAGE) -> None:
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{page} has no {BEGIN} ... {END} markers to put the table between")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    page.write_text(f"{before}{BEGIN}\n{markdown(rows)}\n{END}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", metavar="RESULT", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="the same counts (they are deterministic)")
    parser.add_argument("--no-distributed", action="store_true", help="skip the 2-process job")
    parser.add_argument("--write-docs", action="store_true", help=f"write the table into {DOCS_PAGE.name}")
    args = parser.parse_args(argv)
    if args.worker:
        distributed_worker(args.worker)
        return
    rows = single_process_rows()
    if not args.no_distributed:
        rows += distributed_rows()
    emit(header(f"Python calls per training step (sys.setprofile), {STEPS} steps after {WARMUP} warm-up steps"))
    emit(render(rows))
    if args.write_docs:
        write_docs(rows)
        emit(f"wrote the table into {DOCS_PAGE}")


if __name__ == "__main__":
    main()
