"""Processes started by IBM Spectrum LSF's ``jsrun``."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from fabric_core.environments.torchelastic import _check_counts
from fabric_core.plugins.environment import ClusterEnvironment

_REQUIRED = ("LSB_JOBID", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_LOCAL_RANK")


class LSFEnvironment(ClusterEnvironment):
    """Ranks from ``JSM_NAMESPACE_*``; hosts from the rank file ``LSB_DJOB_RANKFILE`` (launch node skipped)."""

    name = "lsf"
    detect_priority = 40

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return all(v in env for v in _REQUIRED)

    @property
    def creates_processes_externally(self) -> bool:
        return True

    def _hosts(self) -> list[str]:
        path = self.env.get("LSB_DJOB_RANKFILE")
        if not path:
            hosts = self.env.get("LSB_HOSTS", "").split()
        else:
            with open(path) as f:
                hosts = [line.strip() for line in f if line.strip()]
        unique = list(dict.fromkeys(hosts))
        return unique[1:] if len(unique) > 1 else unique  # the first host is the batch (launch) node

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in self.env:
            return self.env["MASTER_ADDR"]
        hosts = self._hosts()
        return hosts[0] if hosts else "127.0.0.1"

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in self.env:
            return int(self.env["MASTER_PORT"])
        return 10000 + int(self.env["LSB_JOBID"]) % 1000

    def world_size(self) -> int:
        return int(self.env["JSM_NAMESPACE_SIZE"])

    def global_rank(self) -> int:
        return int(self.env["JSM_NAMESPACE_RANK"])

    def local_rank(self) -> int:
        return int(self.env["JSM_NAMESPACE_LOCAL_RANK"])

    def local_world_size(self) -> int | None:
        return int(self.env["JSM_NAMESPACE_LOCAL_SIZE"]) if "JSM_NAMESPACE_LOCAL_SIZE" in self.env else None

    def node_rank(self) -> int:
        hosts = self._hosts()
        name = socket.gethostname()
        if name in hosts:
            return hosts.index(name)
        per_node = self.local_world_size() or 1
        return self.global_rank() // per_node

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        _check_counts("LSF (jsrun)", self.world_size(), num_devices, num_nodes)
