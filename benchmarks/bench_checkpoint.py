"""Checkpoint throughput: ``fabric.save``/``fabric.load`` against ``torch.save``/``torch.load`` of the same state.

The state is a model and its Adam optimizer after one step (so the optimizer holds two moments per
parameter), about ``--megabytes`` in all. Raw saves ``{"model": model.state_dict(), "optimizer":
optimizer.state_dict()}`` with ``torch.save`` and loads it back with ``torch.load(weights_only=True)``
plus ``load_state_dict``; fabric does the same through ``fabric.save(path, {"model": ..., "optimizer":
...})`` and ``fabric.load(path, state)``. Fabric's save is atomic (temporary file, fsync, rename),
which costs an fsync that plain ``torch.save`` skips; a third contender, ``torch.save + fsync``,
shows what durability alone costs. Target: fabric at least 0.9x raw throughput, both directions.

Fabric also hashes every byte while writing (XXH3-128, no second read) and verifies the checksum
when loading; ``fabric, verify=False`` shows the load without the check, and the verify share
row what the check costs (goal: at most 10% of the load). ``fabric async`` times
``fabric.save(..., async_=True)`` until it returns (the state is snapshotted, the bytes are still
being written). Use ``--megabytes 1024`` for the 1 GB figures of docs/pages/checkpoints.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Samples, emit, header, rotated, table, verdict

TARGET = 0.9


def make_state(megabytes: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A model whose parameters plus Adam's two moments come to about ``megabytes``."""
    width = 1024
    params_needed = megabytes * 2**20 / 4 / 3
    depth = max(1, round(params_needed / (width * width)))
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    optimizer.step()
    return model, optimizer


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def warm(path: Path) -> None:
    """Read ``path`` once (untimed), so that the next load finds it in the page cache.

    Without this, the file a load reads may have been evicted by the saves before it (the kernel
    evicts the clean pages of a file fabric flushed before the dirty pages of a plain torch.save),
    and the comparison would be one of disk reads, not of the loaders.
    """
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(16 << 20)
        while f.readinto(buffer):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--megabytes", type=float, default=200, help="approximate checkpoint size (default 200)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of a 50 MB checkpoint (a smoke run)")
    args = parser.parse_args(argv)
    rounds, megabytes = (3, 50.0) if args.quick else (args.rounds, args.megabytes)

    from fabric_core import Fabric

    torch.set_num_threads(1)
    fabric = Fabric(accelerator="cpu", devices=1)
    model, optimizer = make_state(megabytes)
    f_model, f_optimizer = fabric.setup(*make_state(megabytes))
    folder = Path(tempfile.mkdtemp(prefix="fabric-bench-ckpt-", dir=args.dir))
    raw_path, fabric_path, fsync_path = folder / "raw.pt", folder / "fabric.pt", folder / "fsync.pt"

    def raw_save() -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, raw_path)

    def fsync_save() -> None:
        with open(fsync_path, "wb") as f:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, f)
            f.flush()
            os.fsync(f.fileno())

    def fabric_save() -> None:
        fabric.save(fabric_path, {"model": f_model, "optimizer": f_optimizer})

    def fabric_async_save() -> None:
        handles.append(fabric.save(async_path, {"model": f_model, "optimizer": f_optimizer}, async_=True))

    def raw_load() -> None:
        data = torch.load(raw_path, weights_only=True)
        model.load_state_dict(data["model"])
        optimizer.load_state_dict(data["optimizer"])

    def fabric_load() -> None:
        fabric.load(fabric_path, {"model": f_model, "optimizer": f_optimizer})

    def fabric_load_unverified() -> None:
        fabric.load(fabric_path, {"model": f_model, "optimizer": f_optimizer}, verify=False)

    def finish_async() -> None:
        while handles:
            handles.pop().result()

    handles: list = []
    async_path = folder / "async.pt"
    saves = {
        "raw torch": raw_save,
        "torch.save + fsync": fsync_save,
        "fabric": fabric_save,
        "fabric async (until it returns)": fabric_async_save,
    }
    loads = {"raw torch": raw_load, "fabric": fabric_load, "fabric, verify=False": fabric_load_unverified}
    try:
        for fn in (*saves.values(), *loads.values()):  # warm-up; also creates the files
            fn()
            finish_async()
        size = fabric_path.stat().st_size
        save_s, load_s, save_cpu, load_cpu = Samples(), Samples(), Samples(), Samples()
        for r in range(rounds):
            for name in rotated(list(saves), r):
                os.sync()  # every save starts with nothing of another contender's left to write back
                wall, cpu = timed(saves[name])
                save_s.add(name, wall)
                save_cpu.add(name, cpu)
                finish_async()  # the background write is not timed, but must not overlap the next contender
            for name in rotated(list(loads), r):
                warm(raw_path if name == "raw torch" else fabric_path)  # every load reads from the page cache
                wall, cpu = timed(loads[name])
                load_s.add(name, wall)
                load_cpu.add(name, cpu)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    emit(
        header(
            f"Checkpoint throughput, {size / 2**20:.0f} MiB of model + Adam state (median of {rounds} interleaved rounds)",
            [
                f"written to {folder.parent}; os.sync() before each save and the file read before each load "
                "(both untimed), fsync where stated",
                "ratios: medians of per-round throughput ratios (same round), spread: half their IQR",
            ],
        )
    )
    rows = []
    for op, samples, cpu, names in (("save", save_s, save_cpu, saves), ("load", load_s, load_cpu, loads)):
        for name in names:
            ratio = samples.ratio("raw torch", name)  # throughput ratio = time of raw / time of this one
            target = f">= {TARGET:.1f}x {verdict(-ratio, -TARGET)}" if name == "fabric" else ""
            rows.append(
                [
                    op,
                    name,
                    f"{samples.median(name) * 1e3:.0f} ms",
                    f"{size / samples.median(name) / 2**20:.0f} MiB/s",
                    f"{ratio:.2f}x",
                    f"±{samples.ratio_spread('raw torch', name):.2f}",
                    f"{cpu.median(name) * 1e3:.0f} ms",
                    f"{cpu.ratio('raw torch', name):.2f}x",
                    target,
                ]
            )
    shares, cpu_shares = Samples(), Samples()
    for verified, unverified in zip(load_s.values["fabric"], load_s.values["fabric, verify=False"]):
        shares.add("share", 1 - unverified / verified)
    for verified, unverified in zip(load_cpu.values["fabric"], load_cpu.values["fabric, verify=False"]):
        cpu_shares.add("share", 1 - unverified / verified)
    share = shares.median("share")
    spread = _half_iqr(shares.values["share"])
    rows.append(
        [
            "load",
            "verify share of fabric load",
            "",
            "",
            f"{share * 100:.1f}%",
            f"±{spread * 100:.1f}%",
            "",
            f"{cpu_shares.median('share') * 100:.1f}%",
            f"<= 10% {verdict(share, 0.10)}",
        ]
    )
    emit(table(["op", "contender", "time", "throughput", "vs raw", "spread", "CPU", "CPU vs raw", "target"], rows))


def _half_iqr(values: list[float]) -> float:
    if len(values) < 4:
        return float("nan")
    q1, _, q3 = statistics.quantiles(sorted(values), n=4)
    return (q3 - q1) / 2


if __name__ == "__main__":
    main()
