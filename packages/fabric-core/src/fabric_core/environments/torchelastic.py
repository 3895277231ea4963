"""Processes started by ``torchrun`` / TorchElastic (and by ``fabric run``, which uses it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fabric_core.plugins.environment import ClusterEnvironment

_REQUIRED = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "WORLD_SIZE")


class TorchElasticEnvironment(ClusterEnvironment):
    """Reads the variables torchrun's elastic agent sets for each worker."""

    name = "torchelastic"
    detect_priority = 50

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return "TORCHELASTIC_RUN_ID" in env or all(v in env for v in _REQUIRED)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self.env.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(self.env.get("MASTER_PORT", 0))

    def world_size(self) -> int:
        return int(self.env.get("WORLD_SIZE", 1))

    def global_rank(self) -> int:
        return int(self.env.get("RANK", 0))

    def local_rank(self) -> int:
        return int(self.env.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return int(self.env.get("GROUP_RANK", 0))

    def local_world_size(self) -> int | None:
        return int(self.env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in self.env else None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        _check_counts(self.name, self.world_size(), num_devices, num_nodes)


def _check_counts(name: str, world_size: int, num_devices: int, num_nodes: int) -> None:
    from fabric_core.errors import MisconfigurationError

    if num_devices * num_nodes != world_size:
        raise MisconfigurationError(
            f"The job was started by {name} with {world_size} processes, but Fabric was given devices={num_devices} "
            f"and num_nodes={num_nodes} ({num_devices * num_nodes} processes). Leave devices/num_nodes at their "
            "defaults to take them from the launcher, or make them agree."
        )
