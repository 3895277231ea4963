"""Time from starting a 2-process DDP job on CPU to rank 0's first finished optimizer step.

Each sample starts ``ddp_startup_worker.py`` in a fresh interpreter (so imports count, as they do
for a user) and measures until rank 0 has taken its first optimizer step. The ways a user starts it:

- ``python train.py`` with ``Fabric(strategy="ddp", devices=2).launch()`` (the script re-runs itself);
- ``fabric run --devices 2 train.py`` and ``torchrun --nproc-per-node 2 train.py`` (the same script);
- ``Fabric(strategy="ddp_spawn").launch(fn)`` (spawned workers).

Baselines in the same run: raw torch (``torch.multiprocessing.spawn`` + ``init_process_group`` +
``DistributedDataParallel``; the same raw script under torchrun) and, with ``FABRIC_BENCH_PEERS=1``,
Lightning Fabric's self-relaunch. ``python train.py`` is measured twice: as Fabric starts it by
default (rank 1 forked from rank 0 at ``launch()``) and with ``FABRIC_RELAUNCH=exec`` (rank 1 re-runs
the script in a new interpreter, as Lightning does). All contenders alternate round by round; medians,
the interquartile range (IQR) and the median of the per-round ratios with its IQR are printed.
Targets: Fabric's spawn within 10% of raw spawn, torchrun within 10% of raw torchrun, the
self-relaunch at most 60% of Lightning's.

    python benchmarks/bench_ddp_startup.py [--rounds N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, header, interleave, table, verdict

HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "ddp_startup_worker.py")
PY = sys.executable
TORCHRUN = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
FABRIC_RUN = [PY, "-m", "fabric_core.cli", "run", "--devices", "2", "--accelerator", "cpu"]

SCRIPT = "fabric python train.py"
EXEC = {"FABRIC_RELAUNCH": "exec"}
# contender -> (command before the result file, baseline it is compared with, target ratio, extra environment)
CONTENDERS: dict[str, tuple[list[str], str | None, float | None, dict[str, str]]] = {
    "raw spawn": ([PY, WORKER, "raw"], None, None, {}),
    "fabric ddp_spawn": ([PY, WORKER, "fabric"], "raw spawn", 1.10, {}),
    SCRIPT: ([PY, WORKER, "script"], "raw spawn", None, {}),
    f"{SCRIPT}, FABRIC_RELAUNCH=exec": ([PY, WORKER, "script"], "raw spawn", None, EXEC),
    "raw torchrun": ([*TORCHRUN, WORKER, "raw_env"], None, None, {}),
    "fabric under torchrun": ([*TORCHRUN, WORKER, "script"], "raw torchrun", 1.10, {}),
    "fabric run": ([*FABRIC_RUN, WORKER, "script"], "raw torchrun", None, {}),
}
PEER = ("lightning python train.py", [PY, WORKER, "lightning"])


def first_step(command: list[str], total: list[float], extra_env: dict[str, str] | None = None) -> float:
    """Seconds from starting the job to rank 0's first optimizer step; the job's whole wall time goes to ``total``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra_env or {})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "first_step"
        start = time.time()
        result = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=300, env=env)
        total.append(time.time() - start)
        if result.returncode != 0 or not path.exists():
            raise RuntimeError(f"{command} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        return float(path.read_text()) - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke run)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these contenders (and their baselines)")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds

    contenders = {name: (spec[0], spec[3]) for name, spec in CONTENDERS.items()}
    targets: dict[str, tuple[str | None, float | None]] = {name: spec[1:3] for name, spec in CONTENDERS.items()}
    if os.environ.get("FABRIC_BENCH_PEERS") == "1":
        try:
            import lightning_fabric  # noqa: F401
        except ImportError:
            emit("(FABRIC_BENCH_PEERS=1 but lightning_fabric is not installed: no Lightning row)")
        else:
            contenders[PEER[0]] = (PEER[1], {})
            targets[PEER[0]] = (None, None)
            targets[SCRIPT] = (PEER[0], 0.60)
            targets[f"{SCRIPT}, FABRIC_RELAUNCH=exec"] = (PEER[0], None)
    if args.only:
        unknown = sorted(set(args.only) - set(contenders))
        if unknown:
            raise SystemExit(f"unknown contenders {unknown}; choose from {sorted(contenders)}")
        keep = set(args.only) | {targets[name][0] for name in args.only} - {None}
        contenders = {name: spec for name, spec in contenders.items() if name in keep}

    totals: dict[str, list[float]] = {name: [] for name in contenders}
    first = next(iter(contenders.values()))
    first_step(first[0], [], first[1])  # warm the file cache
    samples = interleave(
        {
            name: (lambda spec=spec, name=name: first_step(spec[0], totals[name], spec[1]))
            for name, spec in contenders.items()
        },
        rounds,
    )
    emit(header(f"2-process DDP on CPU (gloo): start to first optimizer step ({rounds} interleaved rounds)"))
    rows = []
    for name in contenders:
        baseline, target = targets[name]
        ratio = samples.ratio(name, baseline) if baseline else None
        whole = sorted(totals[name])[len(totals[name]) // 2]
        data = sorted(samples.values[name])
        q1, _, q3 = statistics.quantiles(data, n=4) if len(data) >= 2 else (data[0], 0, data[0])
        rows.append(
            [
                name,
                f"{samples.median(name):.2f} s",
                f"{q1:.2f}-{q3:.2f} s",
                f"{ratio:.2f}x ±{samples.ratio_spread(name, baseline):.2f} {baseline}" if ratio is not None else "",
                f"{whole:.2f} s",
                f"<= {target:.2f}x {verdict(ratio, target)}" if target is not None and ratio is not None else "",
            ]
        )
    emit(
        table(["how it starts", "to first step (median)", "IQR", "ratio (median, ±IQR/2)", "whole job", "target"], rows)
    )


if __name__ == "__main__":
    main()
