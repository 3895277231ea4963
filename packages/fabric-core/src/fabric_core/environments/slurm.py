"""Processes started by SLURM's ``srun`` (one task per device)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

from fabric_core.environments.torchelastic import _check_counts
from fabric_core.plugins.environment import ClusterEnvironment


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list (``node[01-03,7],gpu5``) into host names."""
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[\s]+)(\[([^\]]*)\])?", nodelist):  # hosts separated by commas or spaces
        prefix, ranges = match.group(1), match.group(3)
        if ranges is None:
            hosts.append(prefix)
            continue
        for part in (p.strip() for p in ranges.split(",")):
            if "-" in part:
                start, end = part.split("-", 1)
                width = len(start)
                hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(start), int(end) + 1))
            else:
                hosts.append(prefix + part)
    return hosts


class SLURMEnvironment(ClusterEnvironment):
    """Reads ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID``; rank 0's host is the first of the node list.

    An interactive allocation (``salloc`` then running python directly, job name ``bash`` or
    ``interactive``) is not treated as SLURM-managed: Fabric launches the processes itself there.
    """

    name = "slurm"
    detect_priority = 40

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        env = os.environ if env is None else env  # Lightning calls detect() without arguments
        return (
            "SLURM_NTASKS" in env and "SLURM_PROCID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")
        )

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" in self.env:
            return self.env["MASTER_ADDR"]
        nodelist = self.env.get("SLURM_JOB_NODELIST", self.env.get("SLURM_NODELIST", "127.0.0.1"))
        return expand_nodelist(nodelist)[0]

    @property
    def main_port(self) -> int:
        if "MASTER_PORT" in self.env:
            return int(self.env["MASTER_PORT"])
        # Every task of the job derives the same port from the job id.
        job_id = self.env.get("SLURM_JOB_ID", "0")
        return 15000 + int(job_id[-4:] if job_id[-4:].isdigit() else 0) % 20000

    def world_size(self) -> int:
        return int(self.env["SLURM_NTASKS"])

    def global_rank(self) -> int:
        return int(self.env["SLURM_PROCID"])

    def local_rank(self) -> int:
        return int(self.env.get("SLURM_LOCALID", 0))

    def node_rank(self) -> int:
        return int(self.env.get("SLURM_NODEID", 0))

    def local_world_size(self) -> int | None:
        value = self.env.get("SLURM_NTASKS_PER_NODE")
        if value:
            match = re.match(r"\d+", value)  # "2" or "2(x3)"
            if match:
                return int(match.group())
        nodes = self.env.get("SLURM_NNODES")
        return self.world_size() // int(nodes) if nodes else None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        _check_counts("SLURM (srun)", self.world_size(), num_devices, num_nodes)


def requeue_job(env: Mapping[str, str] | None = None) -> str:
    """Put the running SLURM batch job back in the queue (``scontrol requeue``); returns the job id.

    Call it on one rank after the checkpoint is saved (``fabric.requeue_requested``): SLURM stops
    the job's processes and starts the batch script again, with ``SLURM_RESTART_COUNT`` raised by
    one, so the script resumes from the checkpoint. The job must be requeueable (``sbatch --requeue``
    or the cluster's ``JobRequeue=1``). An array task is requeued alone.
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise RuntimeError("requeue_job() runs inside a SLURM job: SLURM_JOB_ID is not set.")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    scontrol = shutil.which("scontrol", path=env.get("PATH"))
    if scontrol is None:
        raise RuntimeError("requeue_job() needs SLURM's `scontrol` command on PATH.")
    result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`scontrol requeue {job}` failed: {(result.stderr or result.stdout).strip()}")
    return job
