"""What the repository holds: its distributions, their versions and the pins between them.

Shared by the scripts in tools/. Reads files only (pyproject.toml and the ``__about__.py`` that
hatchling takes the version from); it imports none of our packages, so it works before anything
is installed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE = "fabric-core"


@dataclass(frozen=True)
class Pin:
    """One requirement in a pyproject that names a distribution of this repository."""

    owner: str  # the distribution whose pyproject holds the pin
    pyproject: Path
    section: str  # "dependencies" or "optional-dependencies.<extra>"
    requirement: Requirement
    text: str  # the requirement exactly as written

    @property
    def target(self) -> str:
        return canonicalize_name(self.requirement.name)


@dataclass
class Distribution:
    """One ``packages/<dist>/`` folder."""

    name: str  # canonical name, e.g. "fabric-core"
    folder: Path
    pyproject: Path
    about: Path  # the file hatchling reads the version from
    version: str
    dependencies: list[str] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def import_name(self) -> str:
        return self.name.replace("-", "_")

    def plugin_api(self) -> str | None:
        """The ``FABRIC_PLUGIN_API`` a backend declares in its ``__about__.py`` (``None`` when absent)."""
        return read_assignment(self.about, "FABRIC_PLUGIN_API")


class WorkspaceError(Exception):
    """A pyproject or version file that cannot be read; the message names the file."""


def read_assignment(path: Path, name: str) -> str | None:
    """The string assigned to ``name`` at module level in ``path`` (read with ``ast``, never imported)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError) as err:
        raise WorkspaceError(f"{path}: cannot read it ({err})") from None
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id == name:
                value = getattr(node, "value", None)
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
                raise WorkspaceError(f"{path}: {name} must be a plain string literal")
    return None


def _version_file(folder: Path, data: dict) -> Path:
    """The file ``[tool.hatch.version] path`` names (hatchling's dynamic version source)."""
    hatch_path = data.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if hatch_path:
        return folder / hatch_path
    name = data.get("project", {}).get("name", folder.name)
    return folder / "src" / name.replace("-", "_") / "__about__.py"


def load_distribution(folder: Path) -> Distribution:
    """Read ``folder/pyproject.toml`` and the version file it points to."""
    pyproject = folder / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise WorkspaceError(f"{pyproject}: cannot parse it ({err})") from None
    project = data.get("project")
    if not isinstance(project, dict) or "name" not in project:
        raise WorkspaceError(f"{pyproject}: no [project] name")
    about = _version_file(folder, data)
    if "version" in project:
        version = str(project["version"])
    else:
        found = read_assignment(about, "__version__") if about.exists() else None
        if found is None:
            raise WorkspaceError(f'{pyproject}: version is dynamic but {about} has no __version__ = "..."')
        version = found
    return Distribution(
        name=canonicalize_name(project["name"]),
        folder=folder,
        pyproject=pyproject,
        about=about,
        version=version,
        dependencies=list(project.get("dependencies", [])),
        extras={k: list(v) for k, v in project.get("optional-dependencies", {}).items()},
        entry_points={k: dict(v) for k, v in project.get("entry-points", {}).items()},
    )


def discover(root: Path = REPO_ROOT) -> dict[str, Distribution]:
    """Every distribution under ``root/packages/*/pyproject.toml``, by canonical name."""
    found: dict[str, Distribution] = {}
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        dist = load_distribution(pyproject.parent)
        found[dist.name] = dist
    return found


def parse_requirement(text: str, where: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as err:
        raise WorkspaceError(f"{where}: invalid requirement {text!r} ({err})") from None


def requirement_sections(dist: Distribution) -> list[tuple[str, str]]:
    """``(section, requirement text)`` for every requirement in ``dist``'s pyproject."""
    rows = [("dependencies", text) for text in dist.dependencies]
    for extra, texts in dist.extras.items():
        rows += [(f"optional-dependencies.{extra}", text) for text in texts]
    return rows


def is_ours(name: str) -> bool:
    """Whether a distribution name belongs to this project's family (``fabric-core``, ``fabric-<backend>``)."""
    return canonicalize_name(name).startswith("fabric-")


def pins(dists: dict[str, Distribution]) -> list[Pin]:
    """Every requirement, in any pyproject, that names one of our distributions (present or not)."""
    found: list[Pin] = []
    for dist in dists.values():
        for section, text in requirement_sections(dist):
            req = parse_requirement(text, f"{dist.pyproject} [{section}]")
            if canonicalize_name(req.name) in dists or is_ours(req.name):
                found.append(Pin(dist.name, dist.pyproject, section, req, text))
    return found
