"""Processes started by ``torchrun`` / TorchElastic (and by ``fabric run``, which uses it)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from fabric_core.plugins.environment import ClusterEnvironment

# Lightning's port when ``MASTER_PORT`` is not set (torchrun always sets it; a hand-made setup may not).
DEFAULT_MAIN_PORT = 12910

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
        return int(self.env.get("MASTER_PORT", DEFAULT_MAIN_PORT))

    def world_size(self) -> int:
        return int(self.env["WORLD_SIZE"])  # KeyError, as in Lightning: torchrun always sets it

    def set_world_size(self, size: int) -> None:
        log_ignored_setter(self, "world size")

    def global_rank(self) -> int:
        return int(self.env["RANK"])

    def set_global_rank(self, rank: int) -> None:
        log_ignored_setter(self, "global rank")

    def local_rank(self) -> int:
        return int(self.env["LOCAL_RANK"])

    def node_rank(self) -> int:
        return int(self.env.get("GROUP_RANK", 0))

    def local_world_size(self) -> int | None:
        return int(self.env["LOCAL_WORLD_SIZE"]) if "LOCAL_WORLD_SIZE" in self.env else None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        _check_counts(self.name, self.world_size(), num_devices, num_nodes)


def log_ignored_setter(environment: ClusterEnvironment, what: str) -> None:
    """Say (at DEBUG, in Lightning's words) that the scheduler's value wins over the one Fabric computed."""
    name = type(environment).__name__
    setter = "set_" + what.replace(" ", "_")
    logging.getLogger(type(environment).__module__).debug(
        f"{name}.{setter} was called, but setting {what} is not allowed. Ignored."
    )


def _check_counts(name: str, world_size: int, num_devices: int, num_nodes: int) -> None:
    from fabric_core.errors import MisconfigurationError

    if num_devices * num_nodes != world_size:
        raise MisconfigurationError(
            f"The job was started by {name} with {world_size} processes, but you set `devices={num_devices}` and "
            f"`num_nodes={num_nodes}`: the product ({num_devices} * {num_nodes}) does not match the world size "
            f"({world_size}). Leave devices/num_nodes at their defaults to take them from the launcher, or make them agree."
        )
