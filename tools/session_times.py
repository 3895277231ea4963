#!/usr/bin/env python3
"""Print how long each nox session took and how much disk its environment holds, from nox's JSON report.

CI runs ``nox --report FILE`` and then this script, so every run ends with the table that tells
where the time went (and which session to move into a shared fixture next). Standard library only:
it runs with the bare interpreter that started nox.

Examples:
    nox --report /tmp/nox.json; python tools/session_times.py /tmp/nox.json
    nox --install-only --report /tmp/install.json; nox --report /tmp/nox.json
    python tools/session_times.py /tmp/nox.json --install-report /tmp/install.json
    python tools/session_times.py /tmp/nox.json --envdir ~/.cache/fabric-nox
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    """Bytes on disk under ``folder`` (links not followed; 0 if it does not exist).

    A file hardlinked several times under ``folder`` counts once: uv links one unpacked copy of each
    wheel from its cache into every environment, so the environments share torch on disk.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                info = entry.stat(follow_symlinks=False)
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
            except OSError:
                continue
    return total


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def table(report: dict, envdir: Path | None, install_report: dict | None = None) -> str:
    """The per-session lines, slowest first, and a total line.

    With ``install_report`` (a ``nox --install-only --report`` run before the tests) an ``install``
    column shows what building each environment cost, apart from its tests.
    """
    sessions = report.get("sessions", [])
    installs = {s.get("name"): s.get("duration") or 0.0 for s in (install_report or {}).get("sessions", [])}
    rows = []
    for session in sorted(sessions, key=lambda s: s.get("duration") or 0.0, reverse=True):
        name = session.get("name", "?")
        size = ""
        if envdir is not None:
            size = f"{folder_bytes(envdir / name) / 1e9:.1f} GB"
        result = session.get("result", "?")
        if session.get("reason"):
            result += f" ({session['reason']})"
        install = _minutes(installs[name]) if name in installs else ""
        rows.append((name, install, _minutes(session.get("duration") or 0.0), size, result))
    total = sum(s.get("duration") or 0.0 for s in sessions)
    first = f"{'session':<16} {'install':>7} " if installs else f"{'session':<16} "
    lines = [f"{first}{'time':>7} {'env disk':>9}  result"]
    for name, install, time, size, result in rows:
        lines.append(f"{name:<16} " + (f"{install:>7} " if installs else "") + f"{time:>7} {size:>9}  {result}")
    total_size = f"{folder_bytes(envdir) / 1e9:.1f} GB" if envdir is not None else ""
    total_install = f"{_minutes(sum(installs.values())):>7} " if installs else ""
    lines.append(f"{'total':<16} {total_install}{_minutes(total):>7} {total_size:>9}  {len(sessions)} sessions")
    if envdir is not None:
        lines.append("(env disk: each environment alone; total: the whole folder, a file shared by hardlinks once)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the file nox --report wrote")
    parser.add_argument(
        "--envdir",
        type=Path,
        default=Path(os.environ.get("FABRIC_NOX_ENVDIR", Path.home() / ".cache" / "fabric-nox")),
        help="where the session environments live (default: FABRIC_NOX_ENVDIR or ~/.cache/fabric-nox)",
    )
    parser.add_argument(
        "--install-report",
        type=Path,
        help="the report of a `nox --install-only` run before the tests: adds each session's install time",
    )
    args = parser.parse_args(argv)
    reports = []
    for path in (args.report, args.install_report):
        try:
            reports.append(json.loads(path.read_text()) if path is not None else None)
        except (OSError, ValueError) as err:
            print(f"session_times: cannot read the nox report {path}: {err}", file=sys.stderr)
            return 1
    print(table(reports[0], args.envdir if args.envdir.is_dir() else None, reports[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
