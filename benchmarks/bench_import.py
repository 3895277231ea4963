"""Import time: ``from fabric_core import Fabric`` against ``import torch``, in fresh interpreters.

Each sample starts a new ``python -c ...`` and times it from the outside (interpreter start-up
included, the same for every contender). Contenders are interleaved round by round; the table shows
medians and the median of the per-round difference to ``import torch``. Target: fabric adds less than
0.1 s to importing torch. ``import fabric_core`` alone (no torch) and the peers, when installed, are
shown for reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, header, interleave, table, verdict

TARGET_EXTRA_S = 0.1
ON_TOP = "Fabric after torch (same process)"
STATEMENTS = {
    "python (empty)": "pass",
    "import torch": "import torch",
    "import fabric_core": "import fabric_core",
    "from fabric_core import Fabric": "from fabric_core import Fabric",
}
PEERS = {
    "from lightning_fabric import Fabric": ("lightning_fabric", "from lightning_fabric import Fabric"),
    "from accelerate import Accelerator": ("accelerate", "from accelerate import Accelerator"),
}


_PROBE = "import time; _t = time.perf_counter(); {statement}; print(time.perf_counter() - _t)"
_ON_TOP = (
    "import torch, time; _t = time.perf_counter(); from fabric_core import Fabric; print(time.perf_counter() - _t)"
)


def timed(statement: str, inside: list[float] | None = None, probe: str = _PROBE) -> float:
    """Wall time of a fresh ``python -c statement``; the time the import itself took is appended to ``inside``."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", probe.format(statement=statement)], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if inside is not None:
        inside.append(float(result.stdout.strip().splitlines()[-1]))
    return wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--quick", action="store_true", help="3 rounds (a smoke run)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds

    statements = dict(STATEMENTS)
    for label, (module, statement) in PEERS.items():
        if importlib.util.find_spec(module) is not None:
            statements[label] = statement
    for statement in statements.values():  # warm the file cache and the bytecode
        timed(statement)
    inside: dict[str, list[float]] = {label: [] for label in statements}
    contenders = {
        label: (lambda s=statement, name=label: timed(s, inside[name])) for label, statement in statements.items()
    }
    on_top: list[float] = []
    contenders[ON_TOP] = lambda: timed("", on_top, _ON_TOP)
    samples = interleave(contenders, rounds)

    emit(header(f"Import time in fresh interpreters (median of {rounds} interleaved rounds)"))
    base = "import torch"
    rows = []
    for label in statements:
        extra = statistics.median(a - b for a, b in zip(samples.values[label], samples.values[base]))
        target = ""
        if label == "from fabric_core import Fabric":
            target = f"< +{TARGET_EXTRA_S:.1f} s {verdict(extra, TARGET_EXTRA_S)}"
        rows.append(
            [
                label,
                f"{samples.median(label):.3f} s",
                f"{extra:+.3f} s",
                f"{statistics.median(inside[label]):.3f} s",
                f"±{samples.spread(label) * 100:.0f}%",
                target,
            ]
        )
    fabric_alone = statistics.median(on_top)
    rows.append(
        [
            ON_TOP,
            "",
            "",
            f"{fabric_alone:.3f} s",
            "",
            f"< +{TARGET_EXTRA_S:.1f} s {verdict(fabric_alone, TARGET_EXTRA_S)}",
        ]
    )
    emit(table(["statement", "process wall", "vs import torch", "import itself", "spread", "target"], rows))
    emit(
        "process wall: a fresh `python -c` timed from outside; import itself: timed inside that process. The last row\n"
        "imports torch first, then times `from fabric_core import Fabric` alone: fabric's own cost, free of start-up noise."
    )


if __name__ == "__main__":
    main()
