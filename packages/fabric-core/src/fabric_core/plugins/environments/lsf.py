"""``LSFEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.lsf``)."""

from fabric_core.environments.lsf import LSFEnvironment

__all__ = ["LSFEnvironment"]
