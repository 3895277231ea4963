"""The training-step benchmark on a CUDA GPU: step time and peak memory, fabric against raw PyTorch.

Runs only where CUDA is available (and fabric-cuda is installed, which provides
``accelerator="cuda"``); elsewhere it says why it skipped. Same models and method as
bench_step.py, with 16-mixed added (raw uses ``torch.amp.GradScaler``, as fabric-cuda does) and
the peak memory of one step per contender.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step
from common import emit


def skip_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device on this machine"
    if importlib.util.find_spec("fabric_cuda") is None:
        return 'fabric-cuda is not installed (pip install "fabric-core[cuda]")'
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        emit(f"== Training-step overhead on CUDA: skipped, {reason}")
        return
    forwarded = ["--device", "cuda", "--rounds", str(args.rounds), "--seconds", str(args.seconds)]
    bench_step.main([*forwarded, *(["--quick"] if args.quick else [])])


if __name__ == "__main__":
    main()
