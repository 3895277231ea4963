"""``SLURMEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.slurm``)."""

from fabric_core.environments.slurm import SLURMEnvironment

__all__ = ["SLURMEnvironment"]
