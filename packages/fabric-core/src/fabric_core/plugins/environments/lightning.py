"""``LightningEnvironment`` at Lightning's submodule path: core's ``LocalEnvironment`` (Fabric starts the processes)."""

from fabric_core.environments.local import LocalEnvironment
from fabric_core.environments.local import LocalEnvironment as LightningEnvironment

__all__ = ["LightningEnvironment", "LocalEnvironment"]
