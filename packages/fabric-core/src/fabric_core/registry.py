"""Discovery of accelerators, strategies, precisions and environments through entry points.

Every implementation, core's own included, is registered under one of ``GROUPS``. Reading the
entry-point metadata is cheap and cached; an implementation's module is imported only when its
name is asked for, after the version handshake of the distribution that provides it.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from packaging.version import InvalidVersion, Version

from fabric_core.errors import MisconfigurationError, PluginNotInstalledError, PluginVersionError
from fabric_core.plugins.api_version import PLUGIN_API_VERSION

GROUPS: dict[str, str] = {
    "accelerator": "fabric_core.accelerators",
    "strategy": "fabric_core.strategies",
    "precision": "fabric_core.precision",
    "environment": "fabric_core.environments",
}
API_GROUP = "fabric_core.plugin_api"

# Names that sibling packages provide, so that asking for one that is not installed tells the
# user which extra to install. Core does not import these packages; it only knows their names.
_DEEPSPEED_STRATEGIES = (
    "deepspeed",
    "deepspeed_stage_1",
    "deepspeed_stage_1_offload",
    "deepspeed_stage_2",
    "deepspeed_stage_2_offload",
    "deepspeed_stage_3",
    "deepspeed_stage_3_offload",
    "deepspeed_stage_3_offload_nvme",
)
_PROVIDED_BY: dict[tuple[str, str], str] = {
    ("accelerator", "cuda"): "cuda",
    ("accelerator", "gpu"): "cuda",
    ("accelerator", "tpu"): "xla",
    ("accelerator", "xla"): "xla",
    **{("strategy", name): "deepspeed" for name in _DEEPSPEED_STRATEGIES},
    ("strategy", "xla"): "xla",
    ("strategy", "single_xla"): "xla",
    ("strategy", "xla_fsdp"): "xla",
    ("strategy", "xla_spmd"): "xla",
    ("strategy", "xla_spmd_fsdp"): "xla",
}
#: Public classes of sibling packages that scripts import from core's namespaces (Lightning's paths).
_CLASSES_PROVIDED_BY: dict[str, str] = {
    "CUDAAccelerator": "cuda",
    "XLAAccelerator": "xla",
    "DeepSpeedStrategy": "deepspeed",
    "DeepSpeedPrecision": "deepspeed",
    "XLAStrategy": "xla",
    "SingleDeviceXLAStrategy": "xla",
    "XLAFSDPStrategy": "xla",
}


def _extra_installed(extra: str) -> bool:
    try:
        metadata.distribution(f"fabric-{extra}")
    except metadata.PackageNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class PluginEntry:
    """One registered name and where it comes from, known without importing it."""

    kind: str
    name: str
    value: str
    distribution: str | None
    entry_point: metadata.EntryPoint


def install_hint(kind: str, name: str) -> str | None:
    """The pip command that installs the package providing ``name``.

    ``None`` unless a known sibling package provides exactly that name and is not installed: a name
    nobody provides (a typo) gets the list of valid names instead of a misleading install hint.
    """
    extra = _PROVIDED_BY.get((kind, name))
    if extra is None or _extra_installed(extra):
        return None
    return f'pip install "fabric-core[{extra}]"'


def class_install_hint(class_name: str) -> str | None:
    """Like ``install_hint``, for a class name (``DeepSpeedStrategy``) a sibling package exports."""
    extra = _CLASSES_PROVIDED_BY.get(class_name)
    if extra is None or _extra_installed(extra):
        return None
    return f'pip install "fabric-core[{extra}]"'


def backend_class(kind: str, class_name: str) -> Any:
    """The class ``class_name`` exported by an installed package registering ``kind`` plugins, or ``None``.

    Lets ``fabric_core.strategies.DeepSpeedStrategy`` resolve through the entry points, without core
    naming the package. Raises ``PluginNotInstalledError`` with the pip command when a known sibling
    package that would provide it is missing.
    """
    if not class_name[:1].isupper():
        return None
    seen: set[str] = set()
    for entry in available(kind).values():
        if entry.distribution is None or _normalise(entry.distribution) == "fabric_core":
            continue
        module_name, _, attribute = entry.value.partition(":")
        package = module_name.split(".")[0]
        if attribute == class_name or package not in seen:
            seen.add(package)
            check_api_version(entry.distribution)
            if attribute == class_name:
                return entry.entry_point.load()
            try:
                found = getattr(importlib.import_module(package), class_name, None)
            except ImportError:
                continue  # a broken optional backend must not hide the others
            if isinstance(found, type):
                return found
    hint = class_install_hint(class_name)
    if hint is not None:
        raise PluginNotInstalledError(f"{class_name} is provided by a separate package: {hint}")
    return None


@functools.cache
def _installed_entry_points() -> metadata.EntryPoints:
    """Every installed entry point, read in one pass over the distributions (once per process).

    One pass costs about what one ``entry_points(group=...)`` call costs; reading each group on its
    own repeated the pass per group and was the largest part of ``Fabric()``'s start-up.
    """
    return metadata.entry_points()  # type: ignore[return-value]  # SelectableGroups before 3.12; .select() on both


def entry_points_in(group: str) -> metadata.EntryPoints:
    """The installed entry points of ``group``, from the one cached pass."""
    return _installed_entry_points().select(group=group)


@functools.cache
def _entries(kind: str) -> dict[str, PluginEntry]:
    """Read (once per process) the entry points registered for ``kind``. Metadata only."""
    group = GROUPS[kind]
    found: dict[str, PluginEntry] = {}
    for ep in entry_points_in(group):
        dist = ep.dist.name if ep.dist is not None else None
        found.setdefault(ep.name, PluginEntry(kind, ep.name, ep.value, dist, ep))
    return found


def available(kind: str) -> dict[str, PluginEntry]:
    """All names registered for ``kind`` (``accelerator``, ``strategy``, ``precision``, ``environment``)."""
    if kind not in GROUPS:
        raise ValueError(f"Unknown plugin kind {kind!r}; valid kinds: {', '.join(GROUPS)}.")
    return dict(_entries(kind))


def _normalise(name: str | None) -> str:
    return (name or "").replace("-", "_").lower()


@functools.cache
def _api_entries() -> dict[str, metadata.EntryPoint]:
    return {_normalise(ep.dist.name): ep for ep in entry_points_in(API_GROUP) if ep.dist is not None}


@functools.cache
def check_api_version(distribution: str) -> None:
    """Refuse a backend built for an interface version this core cannot serve."""
    if _normalise(distribution) == "fabric_core":
        return
    api_entry = _api_entries().get(_normalise(distribution))
    if api_entry is None:
        raise PluginVersionError(
            f"The installed package {distribution!r} registers Fabric plugins but does not declare which plugin "
            f"interface version it was built for (entry point group {API_GROUP!r}). This core speaks version "
            f"{PLUGIN_API_VERSION}. Upgrade it: pip install -U {distribution}"
        )
    theirs = str(api_entry.load())
    if not api_versions_compatible(PLUGIN_API_VERSION, theirs):
        raise PluginVersionError(
            f"{distribution} was built for Fabric plugin interface {theirs}, but the installed fabric-core provides "
            f"{PLUGIN_API_VERSION}. Install matching versions: pip install -U fabric-core {distribution}"
        )


def api_versions_compatible(core: str, backend: str) -> bool:
    """Same major version, and the backend's minor version is not newer than core's."""
    try:
        core_v, backend_v = Version(core), Version(backend)
    except InvalidVersion:
        return False
    return core_v.major == backend_v.major and core_v.minor >= backend_v.minor


def load(kind: str, name: str) -> Any:
    """Import and return the object registered as ``name`` for ``kind``.

    Raises a ``MisconfigurationError`` that lists the registered names, with the pip command when a
    sibling package would provide the name.
    """
    entries = available(kind)
    entry = entries.get(name)
    if entry is None:
        valid = ", ".join(repr(n) for n in sorted(entries))
        hint = install_hint(kind, name)
        message = f"{kind.capitalize()} {name!r} is not available. Installed choices: {valid}."
        if hint:
            raise PluginNotInstalledError(f"{message} {name!r} is provided by a separate package: {hint}")
        raise MisconfigurationError(message)
    if entry.distribution is not None:
        check_api_version(entry.distribution)
    return entry.entry_point.load()


def clear_cache() -> None:
    """Forget what was read (after installing a package in the running process, and in tests)."""
    _installed_entry_points.cache_clear()
    _entries.cache_clear()
    _api_entries.cache_clear()
    check_api_version.cache_clear()
