"""Which installed distribution owns the ``fabric`` command: Lightning Fabric installs one too."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

OWN_DISTRIBUTION = "fabric-core"


def fabric_command_owners() -> list[str]:
    """Distributions that declare a ``fabric`` console script (``fabric-core``, ``lightning`` ...)."""
    owners = []
    for ep in metadata.entry_points(group="console_scripts", name="fabric"):
        name = ep.dist.name if ep.dist is not None else ep.value.split(".")[0]
        if name not in owners:
            owners.append(name)
    return owners


def fabric_on_path_is_ours() -> bool | None:
    """Whether the ``fabric`` found on PATH starts fabric-core (``None`` when there is none, or unreadable)."""
    found = shutil.which("fabric")
    if found is None:
        return None
    try:
        head = Path(found).read_text(errors="replace")[:4096]
    except OSError:
        return None
    return "fabric_core" in head


def version_report(version: str) -> str:
    """The ``--version`` text: this command's identity, and a warning when another ``fabric`` is installed."""
    lines = [f"fabric-core {version} (the `fabric` and `fabric-core` commands of the fabric-core package)"]
    others = [name for name in fabric_command_owners() if name.replace("_", "-").lower() != OWN_DISTRIBUTION]
    if others:
        ours = fabric_on_path_is_ours()
        on_path = {True: "fabric-core's", False: f"{others[0]}'s", None: "unknown"}[ours]
        lines.append(
            f"Note: {', '.join(others)} also install(s) a `fabric` command; the one the shell finds first is "
            f"{on_path}. Run `fabric-core` to be sure you get this one."
        )
    return "\n".join(lines)
