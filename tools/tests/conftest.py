"""Make the scripts in tools/ importable as modules, and build throwaway workspaces for them."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def write_dist(
    root: Path,
    name: str,
    version: str,
    dependencies: list[str] = (),
    extras: dict[str, list[str]] | None = None,
    plugins: bool = True,
    api: str | None = "1.0",
) -> Path:
    """A minimal packages/<name>/ laid out like ours: hatchling, version in src/<pkg>/__about__.py."""
    pkg = name.replace("-", "_")
    folder = root / "packages" / name
    (folder / "src" / pkg).mkdir(parents=True, exist_ok=True)
    about = f'"""Version."""\n\n__version__ = "{version}"\n'
    if api is not None:
        about += f'FABRIC_PLUGIN_API = "{api}"\n'
    (folder / "src" / pkg / "__about__.py").write_text(about)
    lines = [
        "[build-system]",
        'requires = ["hatchling>=1.18"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{name}"',
        'dynamic = ["version"]',
        f"dependencies = {_toml_list(list(dependencies))}",
        "",
    ]
    if extras:
        lines.append("[project.optional-dependencies]")
        lines += [f"{extra} = {_toml_list(reqs)}" for extra, reqs in extras.items()]
        lines.append("")
    if name != "fabric-core" and api is not None:
        lines += ['[project.entry-points."fabric_core.plugin_api"]', f'{pkg} = "{pkg}.__about__:FABRIC_PLUGIN_API"', ""]
    if plugins and name != "fabric-core":
        lines += ['[project.entry-points."fabric_core.accelerators"]', f'{pkg} = "{pkg}.thing:Thing"', ""]
    lines += ["[tool.hatch.version]", f'path = "src/{pkg}/__about__.py"', ""]
    (folder / "pyproject.toml").write_text("\n".join(lines))
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A consistent workspace: core 0.1.0 with extras for two backends at 0.1.0."""
    core_api = tmp_path / "packages" / "fabric-core" / "src" / "fabric_core" / "plugins"
    write_dist(
        tmp_path,
        "fabric-core",
        "0.1.0",
        ["torch>=2.4"],
        extras={
            "cuda": ["fabric-cuda>=0.1.0,<0.2"],
            "loggers": ["fabric-loggers>=0.1.0,<0.2"],
            "all": ["fabric-cuda>=0.1.0,<0.2", "fabric-loggers>=0.1.0,<0.2"],
        },
        api=None,
    )
    core_api.mkdir(parents=True)
    (core_api / "api_version.py").write_text('PLUGIN_API_VERSION = "1.0"\n')
    write_dist(tmp_path, "fabric-cuda", "0.1.0", ["fabric-core>=0.1.0,<0.2", "torch>=2.4"])
    write_dist(tmp_path, "fabric-loggers", "0.1.0", ["fabric-core>=0.1.0,<0.2"], plugins=False)
    return tmp_path


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The real packages/*/pyproject.toml and src/ trees (no tests), copied, to change freely."""
    for pyproject in (REPO / "packages").glob("*/pyproject.toml"):
        target = tmp_path / "packages" / pyproject.parent.name
        target.mkdir(parents=True)
        shutil.copy2(pyproject, target / "pyproject.toml")
        if (pyproject.parent / "src").is_dir():
            shutil.copytree(pyproject.parent / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path
