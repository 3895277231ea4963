"""``MPIEnvironment`` at Lightning's submodule path (``lightning.fabric.plugins.environments.mpi``)."""

from fabric_core.environments.mpi import MPIEnvironment

__all__ = ["MPIEnvironment"]
