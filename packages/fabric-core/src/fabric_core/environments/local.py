"""The default environment: Fabric starts the processes itself on this machine (or via `fabric run`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fabric_core.plugins.environment import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    """Ranks come from Fabric's own launchers, which set ``LOCAL_RANK``/``NODE_RANK`` for the workers.

    The world size and global rank are computed by the strategy and recorded here.
    """

    name = "local"
    detect_priority = -100

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._world_size = 1
        self._global_rank = 0

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return True

    @property
    def creates_processes_externally(self) -> bool:
        # Set in the workers Fabric's subprocess launcher started: they must not launch again.
        return "LOCAL_RANK" in self.env and "FABRIC_LAUNCHED" in self.env

    @property
    def main_address(self) -> str:
        return self.env.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        """The port from ``MASTER_PORT``, or 0 when the launcher is to pick a free one."""
        return int(self.env.get("MASTER_PORT", 0))

    def world_size(self) -> int:
        return (
            int(self.env["WORLD_SIZE"])
            if self.creates_processes_externally and "WORLD_SIZE" in self.env
            else self._world_size
        )

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return int(self.env["RANK"]) if self.creates_processes_externally and "RANK" in self.env else self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank

    def local_rank(self) -> int:
        return int(self.env.get("LOCAL_RANK", 0))

    def local_world_size(self) -> int | None:
        return (
            int(self.env["LOCAL_WORLD_SIZE"])
            if self.creates_processes_externally and "LOCAL_WORLD_SIZE" in self.env
            else None
        )

    def node_rank(self) -> int:
        return int(self.env.get("NODE_RANK", self.env.get("GROUP_RANK", 0)))
