"""Step time of FSDP2 x tensor parallel (2 x 2, 4 processes on CPU/gloo): Fabric against raw torch.distributed.

Both contenders train the transformer of examples/model_parallel_transformer.py with its plan
(``parallelize``) in the same 4 processes, started by torchrun: raw builds the mesh with
``init_device_mesh``, steps with ``loss.backward()``, ``clip_grad_norm_`` (norm made whole with
``full_tensor``) and the optimizer; fabric goes through ``ModelParallelStrategy``, ``fabric.backward``,
``fabric.clip_gradients`` and the wrapped optimizer. A second pair does the same without clipping
(Fabric's clipping needs one all-reduce where ``clip_grad_norm_`` on a 2-D mesh needs two). Each round times ``--steps`` steps of each
contender, in rotating order, between barriers; the ratio is the median over rounds of fabric/raw
measured in the same round, each against the raw contender of its pair. Target: <= 1.02.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
TARGET = 1.02
PROCESSES = 4
RAW, FABRIC = "raw torch.distributed", "fabric"
RAW_NO_CLIP, FABRIC_NO_CLIP = "raw, no clipping", "fabric, no clipping"
BASELINE = {FABRIC: RAW, FABRIC_NO_CLIP: RAW_NO_CLIP}


def worker(rounds: int, steps: int) -> None:
    """Runs in each of the torchrun processes; rank 0 prints the samples as JSON."""
    import warnings

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh

    sys.path.insert(0, str(EXAMPLES))
    sys.path.insert(0, str(HERE))
    from common import Samples, rotated
    from fabric_core import Fabric
    from fabric_core.strategies import ModelParallelStrategy
    from model_parallel_transformer import Config, Transformer, global_batch, load_text, parallelize

    warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
    torch.set_num_threads(1)
    config = Config()
    fabric = Fabric(accelerator="cpu", strategy=ModelParallelStrategy(parallelize, 2, 2), devices=PROCESSES)
    fabric.launch()  # under torchrun: joins the process group the raw contender shares

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("data_parallel", "tensor_parallel"))
    dp_rank = mesh["data_parallel"].get_local_rank()
    data = load_text()
    per_rank = 16 // 2
    batches = []
    for step in range(steps):
        x, y = global_batch(data, step, 16, config.seq_len)
        batches.append(
            (x[dp_rank * per_rank : (dp_rank + 1) * per_rank], y[dp_rank * per_rank : (dp_rank + 1) * per_rank])
        )

    def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, config.vocab_size), y.reshape(-1))

    torch.manual_seed(0)
    raw_model = parallelize(Transformer(config), mesh)
    raw_optimizer = torch.optim.AdamW(raw_model.parameters(), lr=1e-3)

    def raw_steps(clip: bool) -> None:
        for x, y in batches:
            loss = loss_of(raw_model(x), y)
            raw_optimizer.zero_grad()
            loss.backward()
            if clip:
                norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), 1.0)
                if hasattr(norm, "full_tensor"):
                    norm.full_tensor()
            raw_optimizer.step()

    torch.manual_seed(0)
    model = Transformer(config)
    model, optimizer = fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=1e-3))

    def fabric_steps(clip: bool) -> None:
        for x, y in batches:
            loss = loss_of(model(x), y)
            optimizer.zero_grad()
            fabric.backward(loss)
            if clip:
                fabric.clip_gradients(model, optimizer, max_norm=1.0)
            optimizer.step()

    def timed(fn: object) -> float:
        dist.barrier()
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        dist.barrier()
        return (time.perf_counter() - start) / steps

    contenders = {
        RAW: functools.partial(raw_steps, True),
        FABRIC: functools.partial(fabric_steps, True),
        RAW_NO_CLIP: functools.partial(raw_steps, False),
        FABRIC_NO_CLIP: functools.partial(fabric_steps, False),
    }
    for fn in contenders.values():  # warm-up
        fn()
    samples = Samples()
    for r in range(rounds):
        for name in rotated(list(contenders), r):
            samples.add(name, timed(contenders[name]))
    if dist.get_rank() == 0:
        print("SAMPLES " + json.dumps(samples.values), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per contender and round")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps (a smoke run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    rounds, steps = (3, 3) if args.quick else (args.rounds, args.steps)
    if args.worker:
        worker(rounds, steps)
        return

    sys.path.insert(0, str(HERE))
    from common import Samples, emit, header, table, verdict

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={PROCESSES}"]
    command += [__file__, "--worker", "--rounds", str(rounds), "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("SAMPLES ")]
    if result.returncode != 0 or not lines:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"the benchmark workers failed (exit code {result.returncode})")
    samples = Samples(values=json.loads(lines[0].split(" ", 1)[1]))

    emit(
        header(
            f"Model parallel step time, FSDP2 x TP on a 2 x 2 mesh ({PROCESSES} processes, gloo, CPU; "
            f"median of {rounds} interleaved rounds of {steps} steps)",
            ["model: examples/model_parallel_transformer.py Config() with its parallelize plan, 1 thread per process"],
        )
    )
    rows = []
    for name in samples.values:
        baseline = BASELINE.get(name, name)
        ratio = samples.ratio(name, baseline)
        target = f"<= {TARGET:.2f} {verdict(ratio, TARGET)}" if name in BASELINE else ""
        rows.append(
            [
                name,
                f"{samples.median(name) * 1e3:.1f} ms",
                f"{ratio:.3f}x",
                f"±{samples.ratio_spread(name, baseline):.3f}",
                f"±{samples.spread(name) * 100:.0f}%",
                target,
            ]
        )
    emit(table(["contender", "step", "vs raw", "ratio spread", "spread", "target"], rows))


if __name__ == "__main__":
    main()
