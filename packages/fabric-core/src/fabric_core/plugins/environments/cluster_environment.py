"""``ClusterEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.cluster_environment``)."""

from fabric_core.plugins.environment import ClusterEnvironment

__all__ = ["ClusterEnvironment"]
