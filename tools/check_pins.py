#!/usr/bin/env python3
"""Check that every pin between the repository's distributions admits the sibling's current version.

Versions come from each package's ``__about__.py`` (the file ``[tool.hatch.version] path`` names).
Fails (exit 1), naming the file, the pin and the version, when:

- a requirement anywhere (core's extras, a backend's ``fabric-core>=...,<...``) does not admit the
  current version of the sibling it names, or names a ``fabric-*`` distribution the repo lacks;
- core's ``all`` extra does not list every backend, or a backend has no extra of its own name
  (``fabric-cuda`` -> ``fabric-core[cuda]``, which core's install hints tell users to run);
- a backend does not depend on fabric-core;
- a backend registers plugins without declaring its plugin-interface version, or declares one the
  current core would refuse (the same rule as ``fabric_core.registry.api_versions_compatible``).

Example:
    python tools/check_pins.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workspace import CORE, REPO_ROOT, Distribution, WorkspaceError, discover, pins, read_assignment

API_GROUP = "fabric_core.plugin_api"
CORE_API_FILE = Path("src/fabric_core/plugins/api_version.py")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_pin_ranges(dists: dict[str, Distribution], root: Path) -> list[str]:
    problems = []
    for pin in pins(dists):
        where = f"{_relative(pin.pyproject, root)} [{pin.section}]"
        target = dists.get(pin.target)
        if target is None:
            problems.append(f"{where}: {pin.text!r} names {pin.target}, which no packages/*/pyproject.toml defines")
            continue
        if not pin.requirement.specifier.contains(target.version, prereleases=True):
            problems.append(
                f"{where}: {pin.text!r} does not admit {target.name} {target.version} "
                f"(the version in {_relative(target.about, root)})"
            )
    return problems


def check_extras(dists: dict[str, Distribution], root: Path) -> list[str]:
    core = dists.get(CORE)
    if core is None:
        return [f"{root / 'packages'}: no {CORE} distribution found"]
    where = _relative(core.pyproject, root)
    backends = sorted(name for name in dists if name != CORE)
    problems = []
    listed = {name for name in (_requirement_name(t) for t in core.extras.get("all", [])) if name}
    if "all" not in core.extras:
        problems.append(f"{where}: has no 'all' extra; it must list every backend: {', '.join(backends)}")
    else:
        missing = [name for name in backends if name not in listed]
        if missing:
            problems.append(
                f"{where} [optional-dependencies.all]: does not list {', '.join(missing)} (every backend belongs in 'all')"
            )
    for name in backends:
        extra = name.removeprefix("fabric-")
        named = {_requirement_name(t) for t in core.extras.get(extra, [])}
        if name not in named:
            problems.append(
                f'{where}: has no extra {extra!r} that installs {name} (pip install "fabric-core[{extra}]")'
            )
    return problems


def _requirement_name(text: str) -> str | None:
    try:
        return canonicalize_name(Requirement(text).name)
    except InvalidRequirement:
        return None


def check_backends_depend_on_core(dists: dict[str, Distribution], root: Path) -> list[str]:
    problems = []
    for name, dist in sorted(dists.items()):
        if name == CORE:
            continue
        if CORE not in {_requirement_name(t) for t in dist.dependencies}:
            problems.append(
                f'{_relative(dist.pyproject, root)} [dependencies]: {name} does not depend on {CORE} (add "{CORE}>=X,<Y")'
            )
    return problems


def _api_compatible(core: str, backend: str) -> bool:
    try:
        core_v, backend_v = Version(core), Version(backend)
    except InvalidVersion:
        return False
    return core_v.major == backend_v.major and core_v.minor >= backend_v.minor


def _entry_point_file(dist: Distribution, value: str) -> tuple[Path, str] | None:
    module, _, attribute = value.partition(":")
    if not attribute:
        return None
    return dist.folder / "src" / Path(*module.split(".")).with_suffix(".py"), attribute


def check_plugin_api(dists: dict[str, Distribution], root: Path) -> list[str]:
    core = dists.get(CORE)
    if core is None:
        return []
    core_file = core.folder / CORE_API_FILE
    core_api = read_assignment(core_file, "PLUGIN_API_VERSION") if core_file.exists() else None
    problems = []
    for name, dist in sorted(dists.items()):
        if name == CORE:
            continue
        registers = any(group.startswith("fabric_core.") and group != API_GROUP for group in dist.entry_points)
        declared = dist.entry_points.get(API_GROUP, {})
        where = _relative(dist.pyproject, root)
        if registers and not declared:
            problems.append(
                f'{where}: registers plugins but no [project.entry-points."{API_GROUP}"] entry; core refuses such a backend'
            )
        if core_api is None:
            continue
        for value in declared.values():
            located = _entry_point_file(dist, value)
            if located is None or not located[0].exists():
                problems.append(f"{where}: {API_GROUP} entry {value!r} does not point to a module:ATTRIBUTE in src/")
                continue
            theirs = read_assignment(*located)
            if theirs is None or not _api_compatible(core_api, theirs):
                problems.append(
                    f"{_relative(located[0], root)}: plugin interface {theirs!r} is not served by {CORE}'s "
                    f"{core_api!r} ({_relative(core_file, root)}); same major, minor not newer"
                )
    return problems


def check(root: Path = REPO_ROOT) -> list[str]:
    """Every problem found, one message per line; an empty list means all pins are consistent."""
    try:
        dists = discover(root)
    except WorkspaceError as err:
        return [str(err)]
    if not dists:
        return [f"{root / 'packages'}: no */pyproject.toml found"]
    try:
        return [
            *check_pin_ranges(dists, root),
            *check_extras(dists, root),
            *check_backends_depend_on_core(dists, root),
            *check_plugin_api(dists, root),
        ]
    except WorkspaceError as err:
        return [str(err)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"check_pins: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    dists = discover(args.root)
    summary = ", ".join(f"{d.name} {d.version}" for d in dists.values())
    print(f"check_pins: ok, {len(pins(dists))} pins between {len(dists)} distributions ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
