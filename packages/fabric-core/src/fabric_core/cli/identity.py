"""Which installed distribution owns the ``fabric`` command: Lightning Fabric installs one too."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

OWN_DISTRIBUTION = "fabric-core"


def _normalise(name: str) -> str:
    return name.replace("_", "-").lower()


def fabric_command_entries() -> dict[str, str]:
    """Distribution -> module of its ``fabric`` console script (``fabric-core``, ``lightning-fabric`` ...)."""
    found: dict[str, str] = {}
    for ep in metadata.entry_points(group="console_scripts", name="fabric"):
        module = ep.value.split(":")[0].strip()
        found.setdefault(_normalise(ep.dist.name) if ep.dist is not None else module, module)
    return found


def fabric_command_owners() -> list[str]:
    """Distributions that declare a ``fabric`` console script."""
    return list(fabric_command_entries())


def fabric_on_path_owner() -> str | None:
    """The distribution whose ``fabric`` script the shell finds first, or ``None`` when unknown."""
    found = shutil.which("fabric")
    if found is None:
        return None
    try:
        head = Path(found).read_text(errors="replace")[:4096]
    except OSError:
        return None
    for distribution, module in fabric_command_entries().items():
        if module and module in head:
            return distribution
    return None


def version_report(version: str) -> str:
    """The ``--version`` text: this command's identity, and a warning when another ``fabric`` is installed."""
    lines = [f"fabric-core {version} (the `fabric` and `fabric-core` commands of the fabric-core package)"]
    others = [name for name in fabric_command_owners() if name != OWN_DISTRIBUTION]
    if others:
        owner = fabric_on_path_owner()
        on_path = f"{owner}'s" if owner is not None else "not known"
        lines.append(
            f"Note: {', '.join(others)} also install(s) a `fabric` command; the one the shell finds first is "
            f"{on_path}. Run `fabric-core` to be sure you get this one."
        )
    return "\n".join(lines)
