"""Shared pieces of the benchmarks: the header, interleaved timing, medians, the result table.

Every benchmark measures its contenders side by side in the same run: each round times every
contender once, in an order that rotates between rounds, so that drifts of the machine (other
processes, thermal state) hit all of them alike. Ratios are taken within a round and the median
over rounds is reported.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


def version_of(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(title: str, extra: Sequence[str] = ()) -> str:
    """The machine and versions every table is printed under."""
    versions = [f"python {platform.python_version()}"]
    for dist in ("torch", "fabric-core", "lightning-fabric", "lightning", "accelerate", "deepspeed"):
        found = version_of(dist)
        if found:
            versions.append(f"{dist} {found}")
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    lines = [
        f"== {title}",
        f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, load avg {load}",
        f"versions: {', '.join(versions)}",
        *extra,
    ]
    return "\n".join(lines)


def rotated(items: Sequence[str], round_index: int) -> list[str]:
    """``items`` rotated by the round number: every contender goes first equally often."""
    k = round_index % len(items)
    return [*items[k:], *items[:k]]


@dataclass
class Samples:
    """Per-round measurements of each contender (seconds, or any unit), in the same rounds."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return statistics.median(self.values[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of ``name / baseline`` measured in the same round."""
        pairs = zip(self.values[name], self.values[baseline])
        return statistics.median(a / b for a, b in pairs)

    def ratio_spread(self, name: str, baseline: str) -> float:
        """Half the interquartile range of the per-round ratios ``name / baseline``."""
        ratios = sorted(a / b for a, b in zip(self.values[name], self.values[baseline]))
        if len(ratios) < 4:
            return float("nan")
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        return (q3 - q1) / 2

    def spread(self, name: str) -> float:
        """Relative half-width of the middle 50% of the samples (a noise indicator)."""
        data = sorted(self.values[name])
        if len(data) < 4:
            return float("nan")
        q1, _, q3 = statistics.quantiles(data, n=4)
        return (q3 - q1) / 2 / statistics.median(data)


def interleave(contenders: dict[str, Callable[[], float]], rounds: int) -> Samples:
    """Call every contender once per round in rotating order; each returns its own measurement."""
    samples = Samples()
    names = list(contenders)
    for r in range(rounds):
        for name in rotated(names, r):
            samples.add(name, contenders[name]())
    return samples


def verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "MISS"


def table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with right-aligned cells after the first column."""
    cells = [[str(c) for c in columns], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    out = []
    for j, row in enumerate(cells):
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def emit(text: str) -> None:
    print(text, flush=True)
    sys.stdout.flush()
