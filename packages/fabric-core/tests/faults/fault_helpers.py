"""Running real jobs for the fault suite: start them, inject a fault, and find every process they left.

Each job gets a unique ``FAULT_JOB`` environment variable. Every process it starts inherits it
(re-launched scripts, spawned workers, torchrun's workers), so scanning ``/proc/*/environ`` finds
all of them, printed pid or not: that is how orphans are detected.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MARKER_VAR = "FAULT_JOB"

# Variables that would make a job think it already runs under a scheduler or under `fabric run`.
_INHERITED_PREFIXES = ("FABRIC_", "MASTER_", "TORCHELASTIC_", "SLURM_", "OMPI_", "PMI_", "LSB_", "JSM_", "PMIX_")
_INHERITED_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "ROLE_RANK"}

#: How each launcher starts a 2-process job of ``script``; the script gets the launcher's name as argv[1].
LAUNCHERS: dict[str, Callable[[Path], list[str]]] = {
    "ddp": lambda script: [sys.executable, str(script), "ddp"],
    "ddp_spawn": lambda script: [sys.executable, str(script), "ddp_spawn"],
    "fabric_run": lambda script: [
        sys.executable,
        "-m",
        "fabric_core.cli",
        "run",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        str(script),
        "fabric_run",
    ],
    "torchrun": lambda script: [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(script),
        "torchrun",
    ],
}

#: The lines a 2-process job script puts first, so that one source runs under every launcher.
#: ``say`` writes a whole line in one system call: ranks share stdout, and print() writes the text and
#: the newline separately, so that two ranks' lines can interleave.
FABRIC_FOR_LAUNCHER = """
import os as _os

def say(text):
    _os.write(1, (text + "\\n").encode())

def make_fabric(launcher):
    from fabric_core import Fabric
    if launcher == "fabric_run":
        return Fabric()  # the command line chooses accelerator, devices (and so the strategy)
    if launcher == "torchrun":
        return Fabric(accelerator="cpu", strategy="ddp")  # devices come from torchrun
    return Fabric(accelerator="cpu", strategy=launcher, devices=2)

def run_job(launcher, work, *args):
    fabric = make_fabric(launcher)
    if launcher == "ddp_spawn":
        return fabric.launch(work, *args)
    fabric.launch()
    return work(fabric, *args)
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without cluster/launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES) and k not in _INHERITED_NAMES}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def write_script(folder: Path, source: str, name: str = "job.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(FABRIC_FOR_LAUNCHER) + textwrap.dedent(source))
    return path


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def still_alive(pids: list[int], grace: float = 15.0) -> list[int]:
    """Those of ``pids`` still running after up to ``grace`` seconds (a killed process takes a moment to go)."""
    deadline = time.monotonic() + grace
    alive = [p for p in pids if is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if is_alive(p)]
    return alive


def processes_with_marker(marker: str) -> list[int]:
    """Live processes whose environment holds ``FAULT_JOB=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read() + b"\0"
        except OSError:  # gone, or another user's process
            continue
        if needle in environ and is_alive(int(entry)):
            found.append(int(entry))
    return found


def children_of(pid: int) -> set[int]:
    """Direct children of ``pid`` (all threads), from /proc."""
    kids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return kids
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    return {k for k in kids if is_alive(k)}


@dataclass
class Job:
    """One started job: its launcher process, its output files and its marker."""

    proc: subprocess.Popen[bytes]
    marker: str
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def rank_pids(self) -> dict[int, int]:
        """``PID <rank> <pid>`` lines the job printed."""
        return {int(m[1]): int(m[2]) for m in re.finditer(r"PID (\d+) (\d+)\b", self.stdout)}

    def wait_for_output(self, pattern: str, count: int = 1, timeout: float = 180) -> None:
        """Wait until ``pattern`` matched ``count`` lines of stdout; fail (and clean up) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.proc.poll() is not None  # before reading: its last lines are then in the file
            if len(re.findall(pattern, self.stdout, re.MULTILINE)) >= count:
                return
            if ended or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        leftovers = self.kill_all()
        pytest.fail(
            f"the job never printed {count} line(s) matching {pattern!r} (exit code {self.proc.poll()}, "
            f"killed leftovers {leftovers})\nstdout:\n{self.stdout}\nstderr:\n{self.stderr[-6000:]}"
        )

    def finish(self, timeout: float) -> int:
        """Wait for the launcher to exit; past ``timeout`` seconds the job hangs: kill it all and fail."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            leftovers = self.kill_all()
            pytest.fail(
                f"the job did not end within {timeout:.0f} s of the fault (killed {leftovers})\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr[-6000:]}"
            )

    def leftovers(self, grace: float = 10.0) -> list[int]:
        """Processes of this job still alive ``grace`` seconds after the launcher ended (then killed)."""
        deadline = time.monotonic() + grace
        alive = processes_with_marker(self.marker)
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = processes_with_marker(self.marker)
        if alive:
            self.kill_all()
        return alive

    def kill_all(self) -> list[int]:
        """SIGKILL every process of this job (clean-up after a failed check); returns their pids."""
        pids = processes_with_marker(self.marker)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        return pids


def start_job(
    folder: Path,
    command: list[str],
    env: dict[str, str] | None = None,
    name: str = "job",
    cwd: Path | None = None,
    stdin: bool = False,
) -> Job:
    """Start ``command`` with a fresh marker; stdout/stderr go to files in ``folder`` (stdin a pipe if asked)."""
    marker = uuid.uuid4().hex
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    full_env = {**clean_env(), **(env or {}), MARKER_VAR: marker}
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            env=full_env,
            cwd=cwd or folder,
            # A job started from a terminal: Ctrl-C is delivered. Under `nohup`/a background CI shell the
            # test process inherits SIGINT ignored, which the job would inherit too.
            preexec_fn=_terminal_signals,
        )
    return Job(proc, marker, out, err)


def _terminal_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fabric_lines(stderr: str) -> list[str]:
    """The ``[fabric] ...`` summary lines, without torch's ``[rankN]:`` prefixes."""
    return [m[1] for m in re.finditer(r"\[fabric\] (.*)$", stderr, re.MULTILINE)]
