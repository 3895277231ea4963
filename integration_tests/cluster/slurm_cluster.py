"""A one-node SLURM cluster on this machine: munged, slurmctld and slurmd started from a temporary folder.

Everything the daemons write (keys, sockets, state, spool, logs) stays in that folder, on ports
picked free, so the cluster never touches a system SLURM or munge installation. The node is this
machine under its real host name, reached on 127.0.0.1, with a fixed number of CPUs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The commands the cluster needs (Debian: slurmctld, slurmd, slurm-client, munge).
COMMANDS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "scancel", "squeue", "sinfo")


def missing_commands() -> list[str]:
    """The SLURM and munge commands that are not installed."""
    return [name for name in COMMANDS if shutil.which(name) is None]


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are read, so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def slurm_conf(root: Path, host: str, cpus: int, controller_port: int, node_port: int) -> str:
    """The configuration: one node and partition, linuxproc process tracking, no cgroup plugins."""
    return f"""\
ClusterName=fabric
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    """A running cluster: ``env`` holds what a client command (srun, sbatch ...) needs."""

    root: Path
    host: str
    env: dict[str, str]
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result

    def jobs(self) -> list[str]:
        """Ids of the jobs in the queue (pending or running)."""
        return self.command("squeue", "-h", "-o", "%i").stdout.split()

    def log_tail(self, lines: int = 30) -> str:
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill any process left from a job; remove the folder."""
        try:
            if self.daemons and all(d.poll() is None for d in self.daemons):
                jobs = self.jobs()
                if jobs:
                    self.command("scancel", *jobs, check=False)
                deadline = time.monotonic() + 60
                while self.jobs() and time.monotonic() < deadline:
                    time.sleep(0.5)
        except (RuntimeError, subprocess.TimeoutExpired, OSError):
            pass
        for daemon in reversed(self.daemons):  # slurmd, slurmctld, munged
            _terminate(daemon)
        _kill_leftovers(self.env["SLURM_CONF"])
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def _kill_leftovers(slurm_conf_path: str) -> None:
    """SIGKILL processes (slurmstepd, job tasks) whose environment points at this cluster's configuration."""
    marker = f"SLURM_CONF={slurm_conf_path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def start(cpus: int = 2, timeout: float = 120) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once the node is idle, or raise with the daemons' logs."""
    # munged refuses a socket below a folder others cannot search (nox's TMPDIR is under /root): use /tmp.
    root = Path(tempfile.mkdtemp(prefix="fabric-slurm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    root.chmod(0o755)  # munged wants every folder above its socket searchable by all
    for name in ("munge", "state", "spool", "log"):
        (root / name).mkdir(mode=0o755)
    secret = root / "munge-key"
    secret.mkdir(mode=0o700)
    key = secret / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, cpus, *_free_ports(2)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))}
    env["SLURM_CONF"] = str(conf)
    cluster = SlurmCluster(root=root, host=host, env=env)
    munge = [
        "munged",
        "--foreground",
        f"--socket={root}/munge/munge.socket",
        f"--key-file={key}",
        f"--pid-file={root}/munge/munged.pid",
        f"--seed-file={secret}/munged.seed",
        f"--log-file={root}/log/munged.log",
    ]
    try:
        for command in (munge, ["slurmctld", "-D", "-f", str(conf)], ["slurmd", "-D", "-f", str(conf)]):
            name = command[0]
            with open(root / "log" / f"{name}.out", "wb") as out:
                cluster.daemons.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
            if name == "munged":
                _wait(lambda: (root / "munge" / "munge.socket").exists(), cluster, timeout, "munged's socket")
            if name == "slurmctld":
                _wait(lambda: cluster.command("sinfo", check=False).returncode == 0, cluster, timeout, "slurmctld")
        node_idle = lambda: cluster.command("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip() == "idle"  # noqa: E731
        _wait(node_idle, cluster, timeout, "the node to become idle")
    except Exception as error:
        logs = cluster.log_tail()
        cluster.stop()
        raise RuntimeError(f"the SLURM test cluster did not start: {error}\n{logs}") from error
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, cluster: SlurmCluster, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for daemon in cluster.daemons:
            if daemon.poll() is not None:
                raise RuntimeError(f"{daemon.args[0]} exited with code {daemon.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)
