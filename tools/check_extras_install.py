#!/usr/bin/env python3
"""Install ``fabric-core[EXTRAS]`` from freshly built wheels into a new venv; check what came along.

Builds every distribution (tools/build_wheels.py) into a temporary folder, creates a fresh venv,
runs ``pip install --find-links <folder> "fabric-core[loggers,deepspeed]"`` with torch pinned by a
constraint (so pip takes the local CPU build and never downloads a CUDA one) and our distributions
pinned to the versions just built, then asserts that:

- exactly fabric-core plus the siblings the extras name got installed (no fabric-cuda, fabric-xla);
- each of them is the wheel just built (its installed RECORD equals the wheel's RECORD);
- the plugins the extras bring are registered (``fabric_core.registry`` sees them);
- the ``fabric`` command is on the venv's PATH and answers ``fabric run --help``.

Third-party dependencies (DeepSpeed, TensorBoard ...) come from the package index. Exit 0 when all
holds, 1 with the reason otherwise.

Examples:
    python tools/check_extras_install.py
    python tools/check_extras_install.py --extras loggers --keep
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import venv
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_wheels import BuildError, build_all
from workspace import CORE, REPO_ROOT, Distribution, discover

# Runs inside the new venv: what of ours is installed, its RECORD, and the plugin names registered.
_PROBE = r"""
import json
from importlib import metadata
found = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name.startswith("fabric-"):
        found[name] = {"version": dist.version, "record": dist.read_text("RECORD") or ""}
from fabric_core import registry
plugins = {kind: sorted(registry.available(kind)) for kind in ("accelerator", "strategy", "precision")}
print(json.dumps({"installed": found, "plugins": plugins}))
"""


class CheckFailed(Exception):
    """An expectation did not hold; the message says which."""


def expected_siblings(core: Distribution, extras: list[str]) -> set[str]:
    """The distributions of ours that ``fabric-core[extras]`` pulls in, read from core's pyproject."""
    names = {CORE}
    for extra in extras:
        if extra not in core.extras:
            raise CheckFailed(f"fabric-core has no extra {extra!r}; it has {', '.join(sorted(core.extras))}")
        names |= {canonicalize_name(Requirement(text).name) for text in core.extras[extra]}
    return names


def wheel_record(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        return archive.read(record).decode()


def _record_lines(text: str) -> set[str]:
    # pip adds the lines for INSTALLER, REQUESTED, direct_url and compiled files; the wheel's own lines must all be there.
    return {line.strip() for line in text.splitlines() if line.strip() and "__pycache__" not in line}


def run(command: list[str], what: str) -> str:
    shown = [c if "\n" not in c else "<probe>" for c in command]
    print(f"$ {' '.join(shown)}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {result.returncode}):\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result.stdout


def check(extras: list[str], torch_pin: str, work: Path, isolation: bool = True) -> dict:
    dists = discover(REPO_ROOT)
    expected = expected_siblings(dists[CORE], extras)
    absent = sorted(expected - set(dists))
    if absent:
        raise CheckFailed(f"the extras {extras} name {', '.join(absent)}, which packages/ does not hold yet")

    wheels = work / "wheels"
    try:
        files = build_all(wheels, isolation=isolation)
    except BuildError as err:
        raise CheckFailed(str(err)) from None
    built = {
        dist: next(f for f in files if f.name.startswith(dists[dist].import_name + "-") and f.suffix == ".whl")
        for dist in dists
    }

    constraints = work / "constraints.txt"
    constraints.write_text("\n".join([torch_pin, *(f"{d.name}=={d.version}" for d in dists.values())]) + "\n")
    env_dir = work / "venv"
    print(f"creating venv {env_dir}", flush=True)
    venv.create(env_dir, with_pip=True, clear=True)
    python = str(env_dir / "bin" / "python")
    target = f"fabric-core[{','.join(extras)}]"
    run(
        [python, "-m", "pip", "install", "--quiet", "--find-links", str(wheels), "-c", str(constraints), target],
        f"pip install {target}",
    )

    probe = json.loads(run([python, "-c", _PROBE], "probing the venv").strip().splitlines()[-1])
    installed: dict[str, dict] = probe["installed"]
    ours = set(installed)
    if ours != expected:
        raise CheckFailed(
            f"pip install {target} installed {sorted(ours)} of ours; expected exactly {sorted(expected)} "
            f"(unexpected: {sorted(ours - expected)}, missing: {sorted(expected - ours)})"
        )
    for name in sorted(ours):
        if installed[name]["version"] != dists[name].version:
            raise CheckFailed(
                f"{name} {installed[name]['version']} was installed, not the {dists[name].version} just built"
            )
        missing = _record_lines(wheel_record(built[name])) - _record_lines(installed[name]["record"])
        if missing:
            raise CheckFailed(
                f"{name} in the venv is not the wheel just built ({len(missing)} files differ, e.g. {sorted(missing)[0]})"
            )
    check_registered(probe["plugins"], dists, expected)
    check_command(env_dir)
    return {"installed": {n: installed[n]["version"] for n in sorted(ours)}, "plugins": probe["plugins"]}


def check_command(env_dir: Path) -> None:
    """The console script the README's `fabric run` lines use was installed and starts."""
    command = env_dir / "bin" / "fabric"
    if not command.is_file():
        raise CheckFailed(f"the `fabric` command was not installed ({command} is missing)")
    output = run([str(command), "run", "--help"], "fabric run --help")
    if "--devices" not in output:
        raise CheckFailed(f"`fabric run --help` does not describe --devices:\n{output}")


_KINDS = {
    "fabric_core.accelerators": "accelerator",
    "fabric_core.strategies": "strategy",
    "fabric_core.precision": "precision",
}


def check_registered(plugins: dict[str, list[str]], dists: dict[str, Distribution], expected: set[str]) -> None:
    """The installed siblings' plugin names are registered; names only absent siblings provide are not."""

    def names(dist: Distribution) -> set[tuple[str, str]]:
        return {(kind, name) for group, kind in _KINDS.items() for name in dist.entry_points.get(group, {})}

    present = {(kind, name) for kind, found in plugins.items() for name in found}
    wanted = set().union(*(names(dists[d]) for d in expected))
    missing = wanted - present
    if missing:
        raise CheckFailed(f"installed siblings' plugins are not registered: {sorted(missing)}")
    foreign = {item for d in set(dists) - expected for item in names(dists[d])} - wanted
    leaked = foreign & present
    if leaked:
        raise CheckFailed(f"plugins of packages that should not be installed are registered: {sorted(leaked)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--extras",
        default="loggers,deepspeed",
        help="comma-separated extras of fabric-core (default: loggers,deepspeed)",
    )
    parser.add_argument(
        "--torch", default="torch==2.13.0", help="torch constraint (default: torch==2.13.0, the local CPU build)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (wheels, venv) and print where it is"
    )
    parser.add_argument("--no-isolation", action="store_true", help="build wheels with this environment's hatchling")
    args = parser.parse_args(argv)
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]

    work = Path(tempfile.mkdtemp(prefix="fabric-extras-"))
    try:
        result = check(extras, args.torch, work, isolation=not args.no_isolation)
    except CheckFailed as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"installed of ours: {', '.join(f'{n} {v}' for n, v in result['installed'].items())}")
    for kind, names in result["plugins"].items():
        print(f"registered {kind} names: {', '.join(names)}")
    print(f"OK: fabric-core[{','.join(extras)}] installed exactly {', '.join(result['installed'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
