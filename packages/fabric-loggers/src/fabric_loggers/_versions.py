"""The ``root_dir/name/version_N`` layout: which N a new run gets, claimed so two runs never share it."""

from __future__ import annotations

import os
import re

from fabric_loggers import _remote

_VERSION_DIR = re.compile(r"^version_(\d+)$")


def check_version(version: int | str | None) -> int | str | None:
    """A non-negative int (``version_N``), a folder name, or ``None`` (the next free N)."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, str)):
        raise TypeError(f"version must be an int, a str or None (next free version), got {version!r}.")
    if isinstance(version, int) and version < 0:
        raise ValueError(f"version must be a non-negative int, got {version}.")
    if isinstance(version, str) and (
        not version.strip() or version in (".", "..") or "/" in version or os.sep in version
    ):
        raise ValueError(f"version as a str must be a plain folder name, got {version!r}.")
    return version


def version_dirname(version: int | str) -> str:
    """``version_3`` for 3; a str is the folder name itself."""
    return f"version_{version}" if isinstance(version, int) else version


def existing_versions(experiment_dir: str) -> list[int]:
    """The N of every ``version_N`` folder under ``experiment_dir`` (a local folder or an fsspec URL)."""
    if _remote.is_url(experiment_dir):
        found = [_VERSION_DIR.match(name) for name in _remote.list_folders(experiment_dir)]
        return [int(match.group(1)) for match in found if match]
    try:
        entries = os.listdir(experiment_dir)
    except FileNotFoundError:
        return []
    versions: list[int] = []
    for entry in entries:
        match = _VERSION_DIR.match(entry)
        if match and os.path.isdir(os.path.join(experiment_dir, entry)):
            versions.append(int(match.group(1)))
    return versions


def next_free_version(experiment_dir: str) -> int:
    """One past the highest existing version (gaps left by deleted runs are not reused)."""
    versions = existing_versions(experiment_dir)
    return max(versions) + 1 if versions else 0


def claim_next_version(experiment_dir: str) -> int:
    """Create the next free ``version_N`` folder and return N; ``mkdir`` fails if another run took it first.

    On a URL (object stores have no atomic mkdir) the next free N is taken without that guarantee.
    """
    if _remote.is_url(experiment_dir):
        version = next_free_version(experiment_dir)
        _remote.makedirs(_remote.join(experiment_dir, version_dirname(version)))
        return version
    os.makedirs(experiment_dir, exist_ok=True)
    version = next_free_version(experiment_dir)
    while True:
        try:
            os.mkdir(os.path.join(experiment_dir, version_dirname(version)))
            return version
        except FileExistsError:
            version += 1
