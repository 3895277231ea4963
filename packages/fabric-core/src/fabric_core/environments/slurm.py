"""Processes started by SLURM's ``srun`` (one task per device)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping

from fabric_core.environments.torchelastic import DEFAULT_MAIN_PORT, _check_counts, log_ignored_setter
from fabric_core.plugins.environment import ClusterEnvironment

_INTERACTIVE_JOB_NAMES = ("bash", "interactive")


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

    ``auto_requeue`` and ``requeue_signal`` are Lightning's arguments, kept as attributes for code that
    reads them; Fabric's own requeue support is ``fabric.requeue_requested`` plus :func:`requeue_job`.
    """

    name = "slurm"
    detect_priority = 40

    def __init__(
        self,
        auto_requeue: bool = True,
        requeue_signal: signal.Signals | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(env)
        self.auto_requeue = auto_requeue
        if requeue_signal is None and sys.platform != "win32":
            requeue_signal = signal.SIGUSR1
        self.requeue_signal = requeue_signal
        _warn_if_srun_not_used(self.env)

    @staticmethod
    def detect(env: Mapping[str, str] | None = None) -> bool:
        if env is None:  # Lightning's no-argument call: a user asking directly, so hint at a forgotten `srun`
            env = os.environ
            _warn_if_srun_not_used(env)
        return "SLURM_NTASKS" in env and "SLURM_PROCID" in env and not _is_interactive(env)

    @staticmethod
    def job_name(env: Mapping[str, str] | None = None) -> str | None:
        """SLURM's job name (``SLURM_JOB_NAME``), or ``None`` outside a job."""
        return (os.environ if env is None else env).get("SLURM_JOB_NAME")

    @staticmethod
    def job_id(env: Mapping[str, str] | None = None) -> int | None:
        """The job id as a number; ``None`` outside a batch job and in an interactive allocation."""
        env = os.environ if env is None else env
        job_id = env.get("SLURM_JOB_ID")
        if job_id is None or _is_interactive(env):
            return None
        return int(job_id) if job_id.isdigit() else None

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
        job_id = self.env.get("SLURM_JOB_ID")
        if job_id is None or not job_id[-4:].isdigit():
            return DEFAULT_MAIN_PORT  # as Lightning, outside a batch job
        return 15000 + int(job_id[-4:])

    def world_size(self) -> int:
        return int(self.env["SLURM_NTASKS"])

    def set_world_size(self, size: int) -> None:
        log_ignored_setter(self, "world size")

    def global_rank(self) -> int:
        return int(self.env["SLURM_PROCID"])

    def set_global_rank(self, rank: int) -> None:
        log_ignored_setter(self, "global rank")

    def local_rank(self) -> int:
        return int(self.env["SLURM_LOCALID"])  # KeyError outside `srun`, as in Lightning

    def node_rank(self) -> int:
        return int(self.env["SLURM_NODEID"])

    def local_world_size(self) -> int | None:
        value = self.env.get("SLURM_NTASKS_PER_NODE")
        if value:
            match = re.match(r"\d+", value)  # "2" or "2(x3)"
            if match:
                return int(match.group())
        nodes = self.env.get("SLURM_NNODES")
        return self.world_size() // int(nodes) if nodes else None

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Compare ``devices``/``num_nodes`` with ``--ntasks-per-node``/``--nodes`` (skipped when interactive)."""
        from fabric_core.errors import MisconfigurationError

        if self.job_name(self.env) in _INTERACTIVE_JOB_NAMES:
            return  # Fabric starts the processes itself
        per_node = self.env.get("SLURM_NTASKS_PER_NODE")
        match = re.match(r"\d+", per_node or "")
        if match and int(match.group()) != num_devices:
            raise MisconfigurationError(
                f"You set `devices={num_devices}`, but the number of tasks per node configured in SLURM "
                f"`--ntasks-per-node={per_node}` does not match. HINT: Set `devices={match.group()}`."
            )
        nodes = self.env.get("SLURM_NNODES")
        if nodes is not None and nodes.isdigit() and int(nodes) != num_nodes:
            raise MisconfigurationError(
                f"You set `num_nodes={num_nodes}`, but the number of nodes configured in SLURM `--nodes={nodes}` "
                f"does not match. HINT: Set `num_nodes={nodes}`."
            )
        if "SLURM_NTASKS" in self.env:
            _check_counts("SLURM (srun)", self.world_size(), num_devices, num_nodes)


def _is_interactive(env: Mapping[str, str]) -> bool:
    return env.get("SLURM_JOB_NAME") in _INTERACTIVE_JOB_NAMES


def _warn_if_srun_not_used(env: Mapping[str, str]) -> None:
    """Lightning's hint: `srun` is installed but this process was not started by it (a frequent cause of hangs)."""
    if sys.platform == "win32" or ("SLURM_NTASKS" in env and not _is_interactive(env)):
        return
    if shutil.which("srun", path=env.get("PATH")) is None:
        return
    from fabric_core.utilities.rank_zero import rank_zero_warn
    from fabric_core.utilities.warnings import PossibleUserWarning

    hint = " ".join(["srun", os.path.basename(sys.executable), *sys.argv])[:64]
    rank_zero_warn(
        "The `srun` command is available on your system but is not used. HINT: If your intention is to run on "
        f"SLURM, prepend your python command with `srun` like so: {hint} ...",
        category=PossibleUserWarning,
    )


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
