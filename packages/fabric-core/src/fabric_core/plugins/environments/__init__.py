"""Cluster environments at Lightning's import path (``lightning.fabric.plugins.environments``).

Core's environments live in ``fabric_core.environments``; this module only names them where a script
ported by swapping ``lightning.fabric`` for ``fabric_core`` looks for them. ``LightningEnvironment`` is
core's ``LocalEnvironment`` (processes started by Fabric itself); backend environments (``XLAEnvironment``)
come from the installed packages' entry points. Each name is imported on first use. Lightning's
submodule paths (``...environments.slurm``, ``.lightning``, ``.cluster_environment`` and the others) name
the same classes.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ClusterEnvironment": ("fabric_core.plugins.environment", "ClusterEnvironment"),
    "KubeflowEnvironment": ("fabric_core.environments.kubeflow", "KubeflowEnvironment"),
    "LSFEnvironment": ("fabric_core.environments.lsf", "LSFEnvironment"),
    "LightningEnvironment": ("fabric_core.environments.local", "LocalEnvironment"),
    "LocalEnvironment": ("fabric_core.environments.local", "LocalEnvironment"),
    "MPIEnvironment": ("fabric_core.environments.mpi", "MPIEnvironment"),
    "SLURMEnvironment": ("fabric_core.environments.slurm", "SLURMEnvironment"),
    "TorchElasticEnvironment": ("fabric_core.environments.torchelastic", "TorchElasticEnvironment"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is not None:
        return getattr(importlib.import_module(target[0]), target[1])
    if name.startswith("_"):  # the import system asking for __path__ and the like: never load the registry
        raise AttributeError(f"module 'fabric_core.plugins.environments' has no attribute {name!r}")
    from fabric_core.registry import backend_class

    found = backend_class("environment", name)
    if found is None:
        raise AttributeError(f"module 'fabric_core.plugins.environments' has no attribute {name!r}")
    return found


def __dir__() -> list[str]:
    return list(__all__)
