"""``TorchElasticEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.torchelastic``)."""

from fabric_core.environments.torchelastic import TorchElasticEnvironment

__all__ = ["TorchElasticEnvironment"]
