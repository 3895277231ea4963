"""docs/pages/plugins.md lists exactly the plugin surface: every interface member and submodule export.

A hook added to an interface without a line on the page, or a line left behind for a removed one,
fails here, so the page backend authors read cannot drift from the code.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import fabric_core.plugins as plugins
import pytest

PAGE = Path(__file__).parents[1] / "pages" / "plugins.md"
INTERFACES = ("Accelerator", "Strategy", "Precision", "ClusterEnvironment", "Launcher", "CheckpointIO", "Logger")
SUBMODULES = ("bases", "checkpointing", "wrapped", "tensors", "checkpoint_folders", "collectives", "failures")
_BULLET_NAMES = re.compile(r"^- ((?:`[^`]+`(?:, )?)+)")


def _surface_sections() -> dict[str, set[str]]:
    """``### `Title` `` heading -> the names its bullets start with, under "## The complete surface"."""
    text = PAGE.read_text()
    start = text.index("## The complete surface")
    end = text.find("\n## ", start + 1)
    sections: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text[start : end if end != -1 else None].splitlines():
        heading = re.match(r"^### `([^`]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), set())
            continue
        bullet = _BULLET_NAMES.match(line)
        if bullet and current is not None:
            for name in re.findall(r"`([^`]+)`", bullet.group(1)):
                current.add(name.split("(")[0])
    return sections


def _interface_members(cls: type) -> set[str]:
    own = set(vars(cls)) | set(getattr(cls, "__annotations__", {}))
    return {name for name in own if not name.startswith("_")}


@pytest.mark.parametrize("name", INTERFACES)
def test_every_interface_member_is_on_the_page(name: str) -> None:
    documented = _surface_sections().get(name)
    assert documented is not None, f"plugins.md has no '### `{name}`' section under '## The complete surface'"
    actual = _interface_members(getattr(plugins, name))
    assert not actual - documented, f"{name} members missing from plugins.md: {sorted(actual - documented)}"
    assert not documented - actual, f"plugins.md lists {name} members that do not exist: {sorted(documented - actual)}"


@pytest.mark.parametrize("module", SUBMODULES)
def test_every_submodule_export_is_on_the_page(module: str) -> None:
    title = f"fabric_core.plugins.{module}"
    documented = _surface_sections().get(title)
    assert documented is not None, f"plugins.md has no '### `{title}`' section under '## The complete surface'"
    actual = set(importlib.import_module(title).__all__)
    assert not actual - documented, f"{title} exports missing from plugins.md: {sorted(actual - documented)}"
    assert not documented - actual, (
        f"plugins.md lists {title} names that it does not export: {sorted(documented - actual)}"
    )


def test_the_page_states_the_current_plugin_api_version() -> None:
    text = PAGE.read_text()
    assert f'(now `"{plugins.PLUGIN_API_VERSION}"`)' in text
    assert f"### What changed in {plugins.PLUGIN_API_VERSION}" in text


def test_the_section_check_sees_a_missing_member() -> None:
    """The parser really reads the bullets: a section without its first bullet loses that name."""
    sections = _surface_sections()
    assert "validate" in sections["Strategy"] and "launch" in sections["Launcher"]
    assert "ProcessGroupStrategy" in sections["fabric_core.plugins.bases"]
