"""``KubeflowEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.kubeflow``)."""

from fabric_core.environments.kubeflow import KubeflowEnvironment

__all__ = ["KubeflowEnvironment"]
