"""Processes started by IBM Spectrum LSF's ``jsrun``."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from fabric_core.environments.torchelastic import _check_counts, log_ignored_setter
from fabric_core.plugins.environment import ClusterEnvironment

# What ``jsrun`` sets (Lightning's list), plus the host list: the rank file or ``LSB_HOSTS``.
_REQUIRED = ("LSB_JOBID", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_LOCAL_RANK")
_HOST_LISTS = ("LSB_DJOB_RANKFILE", "LSB_HOSTS")


class LSFEnvironment(ClusterEnvironment):
    """Ranks from ``JSM_NAMESPACE_*``; hosts from the rank file ``LSB_DJOB_RANKFILE`` (launch node skipped)."""

    name = "lsf"
    detect_priority = 40

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return all(v in env for v in _REQUIRED) and any(v in env for v in _HOST_LISTS)

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        self._check_job_variables()

    def _check_job_variables(self) -> None:
        """Fail at construction, in Lightning's words, when the host list or the job id is missing."""
        if not self.env.get("LSB_HOSTS", "").split():
            if "LSB_DJOB_RANKFILE" not in self.env:
                raise ValueError(
                    "Did not find the environment variable `LSB_DJOB_RANKFILE` (nor `LSB_HOSTS`): run the script "
                    "with `jsrun` inside an LSF job."
                )
            if not self.env["LSB_DJOB_RANKFILE"]:
                raise ValueError("The environment variable `LSB_DJOB_RANKFILE` is empty: run the script with `jsrun`.")
        if "MASTER_PORT" not in self.env and not self.env.get("LSB_JOBID", "").isdigit():
            raise ValueError(
                "Could not find job id in environment variable LSB_JOBID (needed for the main port); run inside an "
                "LSF job or set MASTER_PORT."
            )

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

    def set_world_size(self, size: int) -> None:
        log_ignored_setter(self, "world size")

    def global_rank(self) -> int:
        return int(self.env["JSM_NAMESPACE_RANK"])

    def set_global_rank(self, rank: int) -> None:
        log_ignored_setter(self, "global rank")

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
