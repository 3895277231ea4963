#!/usr/bin/env python3
"""Build the wheel and sdist of every distribution under packages/ into one folder, then check them.

Uses ``python -m build`` (sdist first, then the wheel built from that sdist, which proves the sdist
is complete); without the ``build`` package it falls back to ``pip wheel --no-deps`` (wheels only).
Older artifacts of the same distributions in the folder are removed first, so that the folder
never offers pip two versions. Afterwards ``twine check`` validates the metadata (README rendering
included) when twine is installed; ``--check`` makes a missing twine an error.

Examples:
    python tools/build_wheels.py                  # -> dist/
    python tools/build_wheels.py --out /tmp/wheels --check
    python tools/build_wheels.py --package fabric-core --package fabric-cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workspace import REPO_ROOT, Distribution, discover


class BuildError(RuntimeError):
    """A build or check failed; the message holds the command's output."""


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stdout}{result.stderr}"
        )


def artifacts_of(dist: Distribution, folder: Path) -> list[Path]:
    stem = dist.import_name  # wheel and sdist file names use the normalised name: fabric_core-0.1.0...
    return sorted([*folder.glob(f"{stem}-*.whl"), *folder.glob(f"{stem}-*.tar.gz")])


def build(dist: Distribution, out: Path, isolation: bool = True) -> list[Path]:
    """Build ``dist`` into ``out``; returns the files made."""
    for old in artifacts_of(dist, out):
        old.unlink()
    if _has("build"):
        command = [sys.executable, "-m", "build", "--outdir", str(out), str(dist.folder)]
        if not isolation:
            command.insert(3, "--no-isolation")
    else:
        print("note: the 'build' package is missing; building wheels only with pip (pip install build for sdists)")
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(dist.folder)]
        if not isolation:
            command.insert(4, "--no-build-isolation")
    _run(command, f"building {dist.name}")
    made = artifacts_of(dist, out)
    if not any(p.suffix == ".whl" for p in made):
        raise BuildError(f"building {dist.name} produced no wheel in {out}")
    return made


def twine_check(files: list[Path], required: bool) -> bool:
    """Run ``twine check --strict``; returns whether it ran."""
    if not _has("twine"):
        if required:
            raise BuildError("--check needs twine: pip install twine")
        print("note: twine is not installed; metadata not checked (pip install twine, or pass --check to require it)")
        return False
    _run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)], "twine check")
    return True


def build_all(out: Path, names: list[str] | None = None, isolation: bool = True, root: Path = REPO_ROOT) -> list[Path]:
    """Build every distribution (or those in ``names``) into ``out``; returns all files made."""
    dists = discover(root)
    if names:
        unknown = sorted(set(names) - set(dists))
        if unknown:
            raise BuildError(f"unknown distribution(s) {', '.join(unknown)}; choose from {', '.join(sorted(dists))}")
        dists = {name: dists[name] for name in names}
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for dist in dists.values():
        made = build(dist, out, isolation=isolation)
        print(f"built {dist.name} {dist.version}: {', '.join(p.name for p in made)}")
        files += made
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "dist", help="folder for the wheels and sdists (default: dist/)"
    )
    parser.add_argument(
        "--package", action="append", dest="packages", metavar="DIST", help="build only this distribution (repeatable)"
    )
    parser.add_argument(
        "--check", action="store_true", help="require twine and run `twine check --strict` on every file"
    )
    parser.add_argument(
        "--no-isolation", action="store_true", help="build with the current environment's hatchling (offline)"
    )
    args = parser.parse_args(argv)
    try:
        files = build_all(args.out.resolve(), args.packages, isolation=not args.no_isolation)
        if twine_check(files, required=args.check):
            print(f"twine check: {len(files)} files passed")
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
