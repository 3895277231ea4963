"""The migration page's tables stay true: every fabric name imports (or names the package to install)."""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from pathlib import Path

import pytest
from fabric_core import registry

PAGE = Path(__file__).resolve().parents[3] / "docs" / "pages" / "migration.md"
_CODE = re.compile(r"`([^`]+)`")
_STRING = re.compile(r'^(accelerator|strategy)="([^"]+)"$')


def _rows() -> list[list[str]]:
    rows = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _name_rows() -> list[tuple[str, str]]:
    found = []
    for lightning, fabric, *_ in _rows():
        left = _CODE.fullmatch(lightning)
        right = _CODE.fullmatch(fabric)
        if left and left.group(1).startswith("lightning.") and (right or fabric == "—"):
            found.append((left.group(1), right.group(1) if right else ""))
    return found


def _string_rows() -> list[tuple[str, str]]:
    found = []
    for _, fabric, *_ in _rows():
        right = _CODE.fullmatch(fabric)
        match = _STRING.match(right.group(1)) if right else None
        if match:
            found.append((match.group(1), match.group(2)))
    return found


def _import(dotted: str) -> object:
    """Import ``a.b.c.Name``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_the_page_has_tables():
    assert len(_name_rows()) > 60
    assert len(_string_rows()) > 8


@pytest.mark.parametrize(("lightning", "fabric"), _name_rows(), ids=lambda v: v or "none")
def test_every_listed_name_imports(lightning, fabric):
    if not fabric:  # no counterpart: the note must say why
        (row,) = [r for r in _rows() if r[0] == f"`{lightning}`"]
        assert len(row) > 2 and row[2], f"{lightning} has no fabric name and no note saying what to use"
        return
    assert fabric.startswith("fabric_core")
    try:
        obj = _import(fabric)
    except ImportError as err:
        match = re.search(r'pip install "fabric-core\[(\w+)\]"', str(err))
        assert match, f"{fabric} does not import and names no package to install: {err}"
        assert not _installed(f"fabric-{match.group(1)}"), (
            f"{fabric} fails although fabric-{match.group(1)} is installed"
        )
        return
    assert obj is not None
    # the Lightning name's last part is kept unless the table says otherwise
    lightning_leaf, fabric_leaf = lightning.rsplit(".", 1)[1], fabric.rsplit(".", 1)[1]
    if lightning_leaf.lstrip("_") == fabric_leaf.lstrip("_"):
        return
    row = next(r for r in _rows() if r[0] == f"`{lightning}`")
    assert row[2], f"{lightning} -> {fabric} renames the object; the note must say so"


@pytest.mark.parametrize(("kind", "name"), _string_rows())
def test_every_listed_string_is_registered_or_names_its_package(kind, name):
    if name in registry.available(kind):
        return
    hint = registry.install_hint(kind, name)
    assert hint is not None, f'{kind}="{name}" is neither installed nor provided by a known package'
