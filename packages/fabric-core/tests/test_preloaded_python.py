"""The preloaded-Python runner gives a script what ``python script.py`` gives it (the tests that use it rely on that)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.multiprocess

# Prints what a script can see of how it was started, then ends the way argv[1] says.
PROBE = r"""
import json, os, signal, sys, threading
import torch

def probe():
    return {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "main_file": __file__,
        "name": __name__,
        "spec": repr(__spec__),
        "env": os.environ.get("PROBE_VALUE"),
        "cluster": os.environ.get("RANK"),
        "threads": len(os.listdir("/proc/self/task")),
        "torch_threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }

if __name__ == "__main__":
    import atexit
    atexit.register(lambda: sys.stdout.write("EXIT HOOK\n"))
    sys.stdout.write("PROBE " + json.dumps(probe()) + "\n")
    sys.stderr.write("to stderr\n")
    end = sys.argv[1]
    if end == "raise":
        raise ValueError("raised at top level")
    if end == "exit":
        sys.exit(3)
    if end == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()
    if end == "hang":
        threading.Event().wait()
    if end == "message":
        sys.exit("stopped with a message")
    if end == "interrupt":
        raise KeyboardInterrupt
    if end == "thread":  # a non-daemon thread outlives the script's last line: the process waits for it
        threading.Thread(target=lambda: (threading.Event().wait(0.5), sys.stdout.write("THREAD DONE\n"))).start()
    if end == "unclosed":  # never closed nor flushed: finalizing the object at exit writes it
        kept = open(f"unclosed-{os.getpid()}.txt", "w")
        kept.write("kept")
"""


def _probe(proc) -> dict:
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE ")).split(" ", 1)[1])


ENDS = [
    ("ok", 0),
    ("raise", 1),
    ("exit", 3),
    ("signal", -signal.SIGTERM),
    ("message", 1),
    ("interrupt", -signal.SIGINT),
    ("thread", 0),
    ("unclosed", 0),
]


@pytest.mark.parametrize(("end", "returncode"), ENDS)
def test_a_forked_script_starts_and_ends_like_a_fresh_interpreter(
    script_runner, preloaded_script_runner, monkeypatch, tmp_path, end, returncode
):
    monkeypatch.setenv("RANK", "5")  # a cluster variable of the test process is not passed on, in neither
    fresh = script_runner(PROBE, end, "x y", env={"PROBE_VALUE": "p"})
    forked = preloaded_script_runner(PROBE, end, "x y", env={"PROBE_VALUE": "p"})
    assert fresh.returncode == forked.returncode == returncode, forked.stderr
    seen_fresh, seen_forked = _probe(fresh), _probe(forked)
    assert seen_forked["pid"] != seen_fresh["pid"]
    assert {**seen_forked, "pid": None} == {**seen_fresh, "pid": None}
    assert seen_forked["env"] == "p" and seen_forked["cluster"] is None and seen_forked["threads"] == 1
    assert seen_forked["name"] == "__main__" and seen_forked["argv"][1:] == [end, "x y"]
    assert ("EXIT HOOK" in forked.stdout) == ("EXIT HOOK" in fresh.stdout) == (end != "signal")
    assert "to stderr" in forked.stderr
    if end == "raise":
        assert "ValueError: raised at top level" in forked.stderr.splitlines()[-1]
    if end in ("message", "interrupt"):
        assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
        assert forked.stderr.splitlines()[-1] in ("stopped with a message", "KeyboardInterrupt")
    if end == "thread":  # joined first, then the exit hooks, as the interpreter does
        for proc in (fresh, forked):
            assert proc.stdout.index("THREAD DONE") < proc.stdout.index("EXIT HOOK"), proc.stdout
    if end == "unclosed":
        for row in (seen_fresh, seen_forked):
            assert (tmp_path / f"unclosed-{row['pid']}.txt").read_text() == "kept"


def test_a_script_past_its_timeout_is_killed(preloaded_script_runner, preloaded_python):
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired) as info:
        preloaded_script_runner(PROBE, "hang", timeout=10)  # room for the fork to print first
    assert "PROBE " in info.value.output
    assert preloaded_python.serves([sys.executable, "script.py"], _env())  # the server lives on


def test_other_start_up_variables_or_a_launcher_get_a_fresh_interpreter(preloaded_python):
    assert preloaded_python.serves([sys.executable, "script.py"], _env(FABRIC_COLLECTIVE_TIMEOUT="60"))
    assert not preloaded_python.serves([sys.executable, "script.py"], _env(OMP_NUM_THREADS="2"))
    assert not preloaded_python.serves([sys.executable, "-m", "torch.distributed.run", "script.py"], _env())
    assert not preloaded_python.serves(["torchrun", "script.py"], _env())
    # what it does not serve, run() and start() give to a fresh interpreter: a child of this process
    import os

    parent = [sys.executable, "-c", "import os; print(os.getppid())"]
    assert preloaded_python.run(parent, cwd=".", env=_env(), timeout=60).stdout.strip() == str(os.getpid())
    started = preloaded_python.start(parent, cwd=".", env=_env(OMP_NUM_THREADS="2"), stderr=2)
    assert started.stdout.read().strip() == str(os.getpid()) and started.wait(timeout=60) == 0


def _env(**extra: str) -> dict[str, str]:
    from conftest import script_env

    return script_env(extra)


LEADER = r"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("READY", os.getpid(), os.getpgid(0), child.pid, flush=True)
time.sleep(600)
"""


def test_a_started_script_streams_its_output_and_a_group_kill_ends_it_and_its_children(preloaded_python, tmp_path):
    import os
    import subprocess
    import time

    script = tmp_path / "leader.py"
    script.write_text(LEADER)
    with open(os.devnull, "w") as stderr:
        proc = preloaded_python.start(
            [sys.executable, str(script)], cwd=tmp_path, env=_env(), stderr=stderr.fileno(), start_new_session=True
        )
    word, pid, group, child = proc.stdout.readline().split()  # read while the script still runs
    assert word == "READY" and int(pid) == int(group) == proc.pid  # it leads a process group of its own
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while _running(int(child)):
        assert time.monotonic() < deadline, "the script's child outlived the kill of its group"
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
