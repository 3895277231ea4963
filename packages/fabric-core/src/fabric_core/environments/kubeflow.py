"""Pods of a Kubeflow PyTorchJob. Chosen explicitly: its variables look like a plain DDP setup."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fabric_core.environments.torchelastic import log_ignored_setter
from fabric_core.plugins.environment import ClusterEnvironment


class KubeflowEnvironment(ClusterEnvironment):
    """One process per pod: ``RANK`` is the pod's index and ``WORLD_SIZE`` the number of pods.

    Pass ``plugins=[KubeflowEnvironment()]``; it is never auto-detected because the same variables
    appear in other setups.
    """

    name = "kubeflow"
    detect_priority = 0

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return False

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self.env["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return int(self.env["MASTER_PORT"])

    def world_size(self) -> int:
        return int(self.env["WORLD_SIZE"])

    def set_world_size(self, size: int) -> None:
        log_ignored_setter(self, "world size")

    def global_rank(self) -> int:
        return int(self.env["RANK"])

    def set_global_rank(self, rank: int) -> None:
        log_ignored_setter(self, "global rank")

    def local_rank(self) -> int:
        return 0

    def local_world_size(self) -> int | None:
        return 1

    def node_rank(self) -> int:
        return self.global_rank()
