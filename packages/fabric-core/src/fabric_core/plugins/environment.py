"""The ClusterEnvironment interface: where a process learns its rank and its peers."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar


class ClusterEnvironment(ABC):
    """How a job was started (torchrun, SLURM, LSF, MPI, Kubeflow, Fabric itself).

    Contract for backend authors:

    - ``detect(env)`` returns whether the variables in ``env`` show this environment started the
      process. It must not read files or the network.
    - ``detect_priority`` orders detection: the matching environment with the highest priority wins
      (the local default is lowest and always matches).
    - ``creates_processes_externally`` is ``True`` when the scheduler already started one process
      per device, so Fabric must not launch more.
    - Rank getters read the environment lazily so that a launcher may set variables after
      construction.
    """

    name: ClassVar[str] = ""
    detect_priority: ClassVar[int] = 0

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = env

    @property
    def env(self) -> Mapping[str, str]:
        """The variables this environment reads (``os.environ`` unless given)."""
        return os.environ if self._env is None else self._env

    @staticmethod
    @abstractmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        """Whether ``env`` (default ``os.environ``, as Lightning's no-argument ``detect()``) shows that this
        environment started the current process."""

    @property
    @abstractmethod
    def creates_processes_externally(self) -> bool:
        """Whether all processes were started by the scheduler rather than by Fabric."""

    @property
    @abstractmethod
    def main_address(self) -> str:
        """Host name or address of the rank-0 node."""

    @property
    @abstractmethod
    def main_port(self) -> int:
        """Port that rank 0 listens on for the rendezvous."""

    @abstractmethod
    def world_size(self) -> int:
        """Total number of processes in the job."""

    @abstractmethod
    def global_rank(self) -> int:
        """Index of this process among all processes."""

    @abstractmethod
    def local_rank(self) -> int:
        """Index of this process among the processes on its node."""

    @abstractmethod
    def node_rank(self) -> int:
        """Index of this node."""

    def local_world_size(self) -> int | None:
        """Processes per node as the scheduler set it, or ``None`` when the scheduler does not say."""
        return None

    def set_world_size(self, size: int) -> None:
        """Record the world size Fabric computed (environments that read it from the scheduler ignore it)."""

    def set_global_rank(self, rank: int) -> None:
        """Record the global rank Fabric computed (environments that read it from the scheduler ignore it)."""

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Raise ``ValueError`` when the user's ``devices``/``num_nodes`` contradict the scheduler."""

    def teardown(self) -> None:
        """Undo changes this environment made to the process (environment variables)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
