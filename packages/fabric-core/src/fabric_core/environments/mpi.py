"""Processes started by ``mpirun``/``mpiexec`` (Open MPI, MPICH, Intel MPI)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fabric_core.environments.torchelastic import _check_counts, log_ignored_setter
from fabric_core.plugins.environment import ClusterEnvironment

# (world size, rank, local rank, local size) variables of each MPI implementation
_FLAVOURS = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
)


class MPIEnvironment(ClusterEnvironment):
    """Ranks from the MPI launcher's variables.

    The rendezvous address comes from ``MASTER_ADDR``/``MASTER_PORT`` when set; otherwise, with
    ``mpi4py`` installed, rank 0 broadcasts its host and a port over MPI; without it a single-node
    job uses 127.0.0.1 and a port derived from the launcher's process id, which all ranks share.
    """

    name = "mpi"
    detect_priority = 30

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._address: tuple[str, int] | None = None

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return any(f[0] in env and f[1] in env for f in _FLAVOURS)

    def _vars(self) -> tuple[str, str, str, str]:
        for flavour in _FLAVOURS:
            if flavour[0] in self.env:
                return flavour
        raise RuntimeError("No MPI variables found in the environment.")

    @property
    def creates_processes_externally(self) -> bool:
        return True

    def _rendezvous(self) -> tuple[str, int]:
        if self._address is not None:
            return self._address
        if "MASTER_ADDR" in self.env and "MASTER_PORT" in self.env:
            self._address = (self.env["MASTER_ADDR"], int(self.env["MASTER_PORT"]))
            return self._address
        try:
            from mpi4py import MPI  # optional
        except ImportError:
            self._address = (self.env.get("MASTER_ADDR", "127.0.0.1"), 20000 + os.getppid() % 20000)
            return self._address
        import socket

        from fabric_core.launchers.ports import find_free_port

        payload = (socket.gethostname(), find_free_port()) if self.global_rank() == 0 else None
        self._address = MPI.COMM_WORLD.bcast(payload, root=0)
        return self._address

    @property
    def main_address(self) -> str:
        return self._rendezvous()[0]

    @property
    def main_port(self) -> int:
        return self._rendezvous()[1]

    def world_size(self) -> int:
        return int(self.env[self._vars()[0]])

    def set_world_size(self, size: int) -> None:
        log_ignored_setter(self, "world size")

    def global_rank(self) -> int:
        return int(self.env[self._vars()[1]])

    def set_global_rank(self, rank: int) -> None:
        log_ignored_setter(self, "global rank")

    def local_rank(self) -> int:
        return int(self.env.get(self._vars()[2], 0))

    def local_world_size(self) -> int | None:
        value = self.env.get(self._vars()[3])
        return int(value) if value else None

    def node_rank(self) -> int:
        return self.global_rank() // (self.local_world_size() or self.world_size())

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        _check_counts("MPI", self.world_size(), num_devices, num_nodes)
