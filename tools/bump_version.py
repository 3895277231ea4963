#!/usr/bin/env python3
"""Set a package's version and move every pin that names it, so that tools/check_pins.py passes.

Writes ``__version__`` in the package's ``__about__.py`` (hatchling reads the version from there)
and rewrites each requirement on that package in every packages/*/pyproject.toml (core's extras,
``all`` included, and the backends' ``fabric-core`` dependency) to ``>=NEW,<NEXT_MINOR``:
``fabric-cuda 0.2.0`` -> ``"fabric-cuda>=0.2.0,<0.3"``. Extras and markers of a pin are kept.
Prints each change; ``--dry-run`` only prints.

Examples:
    python tools/bump_version.py fabric-cuda 0.2.0
    python tools/bump_version.py core 0.1.1 --keep-compatible   # leave pins that already admit 0.1.1
    python tools/bump_version.py fabric-loggers 0.3.0 --dry-run
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_pins
from workspace import REPO_ROOT, Distribution, WorkspaceError, discover, pins

_VERSION_LINE = re.compile(r"""^(__version__\s*(?::\s*str\s*)?=\s*)(["'])([^"']*)\2""", re.MULTILINE)


@dataclass(frozen=True)
class Change:
    """One edit to one file."""

    path: Path
    old: str
    new: str
    version: str | None = None  # set for the edit of a ``__version__`` line

    def describe(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}: {self.old} -> {self.new}"


def next_minor(version: Version) -> str:
    """The exclusive upper bound of a pin: the next minor release (0.1.3 -> 0.2, 1.4.0 -> 1.5)."""
    return f"{version.major}.{version.minor + 1}"


def new_pin(requirement: Requirement, version: Version) -> str:
    """``requirement`` with its version range replaced by ``>=version,<next minor``."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    return f"{requirement.name}{extras}>={version},<{next_minor(version)}{marker}"


def resolve_package(name: str, dists: dict[str, Distribution]) -> Distribution:
    """Accept ``fabric-cuda``, ``fabric_cuda`` or the short ``cuda``."""
    for candidate in (canonicalize_name(name), canonicalize_name(f"fabric-{name}")):
        if candidate in dists:
            return dists[candidate]
    print(f"error: unknown package {name!r}; choose one of: {', '.join(sorted(dists))}", file=sys.stderr)
    raise SystemExit(2)


def plan_changes(
    dist: Distribution, version: Version, dists: dict[str, Distribution], keep_compatible: bool = False
) -> list[Change]:
    """The edits that set ``dist`` to ``version``: its version file first, then every pin on it."""
    changes = [Change(dist.about, f'__version__ = "{dist.version}"', f'__version__ = "{version}"', str(version))]
    for pin in pins(dists):
        if pin.target != dist.name:
            continue
        if keep_compatible and pin.requirement.specifier.contains(str(version), prereleases=True):
            continue
        replacement = new_pin(pin.requirement, version)
        if replacement != pin.text:
            change = Change(pin.pyproject, f'"{pin.text}"', f'"{replacement}"')
            if change not in changes:  # the same text in two extras ("cuda" and "all") is one edit
                changes.append(change)
    return changes


def apply(change: Change) -> None:
    text = change.path.read_text()
    if change.version is not None:
        value = change.version
        new_text, count = _VERSION_LINE.subn(lambda m: f"{m.group(1)}{m.group(2)}{value}{m.group(2)}", text, count=1)
    else:
        count = text.count(change.old)
        new_text = text.replace(change.old, change.new)
        if count == 0:  # written with single quotes in the TOML
            single_old, single_new = change.old.replace('"', "'"), change.new.replace('"', "'")
            count = text.count(single_old)
            new_text = text.replace(single_old, single_new)
    if count == 0:
        raise WorkspaceError(f"{change.path}: could not find {change.old} to replace")
    change.path.write_text(new_text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", help="distribution to bump: fabric-core, fabric-cuda, ... (or core, cuda, ...)")
    parser.add_argument("new_version", help="the new version, PEP 440 (0.2.0, 0.2.0rc1)")
    parser.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    parser.add_argument("--keep-compatible", action="store_true", help="leave pins that already admit the new version")
    parser.add_argument("--allow-downgrade", action="store_true", help="accept a version lower than the current one")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)

    dists = discover(args.root)
    dist = resolve_package(args.package, dists)
    try:
        version = Version(args.new_version)
    except InvalidVersion:
        parser.error(f"{args.new_version!r} is not a valid PEP 440 version (for example 0.2.0 or 0.2.0rc1)")
    current = Version(dist.version)
    if version == current:
        print(f"{dist.name} is already at {version}; checking pins only.")
    elif version < current and not args.allow_downgrade:
        parser.error(f"{version} is lower than {dist.name}'s current {current}; pass --allow-downgrade to do it anyway")

    changes = plan_changes(dist, version, dists, keep_compatible=args.keep_compatible)
    if version == current:
        changes = changes[1:]
    prefix = "would change" if args.dry_run else "changed"
    for change in changes:
        if not args.dry_run:
            apply(change)
        print(f"{prefix} {change.describe(args.root)}")
    if args.dry_run:
        return 0
    problems = check_pins.check(args.root)
    for problem in problems:
        print(f"check_pins still fails: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
