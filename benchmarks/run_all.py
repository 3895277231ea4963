"""Run every benchmark (``nox -s bench``), each in its own interpreter, and print their tables.

    python benchmarks/run_all.py                 # all of them, full length (~10 minutes on 2 cores)
    python benchmarks/run_all.py --quick         # a smoke run: few, short rounds
    python benchmarks/run_all.py step import     # only these
    python benchmarks/run_all.py calls --write-docs   # and put the calls table into docs/pages/performance.md

Every table compares contenders measured side by side in the same run (interleaved rounds,
medians), with the machine and the versions in its header, and marks each target PASS or MISS.
Benchmarks report; they never fail the build.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "calls": "bench_calls.py",
    "import": "bench_import.py",
    "step": "bench_step.py",
    "step_gpu": "bench_step_gpu.py",
    "ddp_startup": "bench_ddp_startup.py",
    "checkpoint": "bench_checkpoint.py",
    "model_parallel": "bench_model_parallel.py",
    "loggers": "bench_loggers.py",
}

WRITES_DOCS = ("calls",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="short smoke runs instead of measurements")
    parser.add_argument(
        "--write-docs", action="store_true", help="benchmarks that keep a table in the docs rewrite it (calls)"
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    failed = []
    for name in names:
        start = time.perf_counter()
        command = [sys.executable, str(HERE / BENCHMARKS[name]), *(["--quick"] if args.quick else [])]
        if args.write_docs and name in WRITES_DOCS:
            command.append("--write-docs")
        result = subprocess.run(command)
        print(f"({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"benchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
