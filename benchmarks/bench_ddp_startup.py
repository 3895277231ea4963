"""Time from start to the first optimizer step of a 2-process DDP job on CPU: fabric against raw torch.

Each sample starts ``ddp_startup_worker.py`` in a fresh interpreter (so imports count, as they do
for a user) and measures until rank 0 has taken its first optimizer step. Raw: torch.multiprocessing
spawn, gloo ``init_process_group``, ``DistributedDataParallel``. Fabric:
``Fabric(strategy="ddp_spawn", devices=2, accelerator="cpu").launch(fn)``. The two alternate round
by round; the ratio is taken within each round. Target: fabric within 10% of raw.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, header, interleave, table, verdict

HERE = Path(__file__).resolve().parent
TARGET = 1.10
WORKER = HERE / "ddp_startup_worker.py"


def first_step(mode: str, total: list[float]) -> float:
    """Seconds from starting the job to rank 0's first optimizer step; the job's whole wall time goes to ``total``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "first_step"
        start = time.time()
        result = subprocess.run(
            [sys.executable, str(WORKER), mode, str(path)], capture_output=True, text=True, timeout=300
        )
        total.append(time.time() - start)
        if result.returncode != 0 or not path.exists():
            raise RuntimeError(f"{mode} job failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
        return float(path.read_text()) - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke run)")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else args.rounds

    totals: dict[str, list[float]] = {"raw torch": [], "fabric": []}
    first_step("raw", [])  # warm the file cache
    samples = interleave(
        {
            "raw torch": lambda: first_step("raw", totals["raw torch"]),
            "fabric": lambda: first_step("fabric", totals["fabric"]),
        },
        rounds,
    )
    emit(header(f"2-process DDP on CPU (gloo): start to first optimizer step (median of {rounds} interleaved rounds)"))
    rows = []
    for name in ("raw torch", "fabric"):
        ratio = samples.ratio(name, "raw torch")
        target = f"<= {TARGET:.2f}x {verdict(ratio, TARGET)}" if name == "fabric" else ""
        whole = sorted(totals[name])[len(totals[name]) // 2]
        rows.append(
            [
                name,
                f"{samples.median(name):.2f} s",
                f"{ratio:.3f}x",
                f"{whole:.2f} s",
                f"±{samples.spread(name) * 100:.0f}%",
                target,
            ]
        )
    emit(table(["contender", "to first step", "vs raw", "whole job", "spread", "target"], rows))


if __name__ == "__main__":
    main()
