"""strategy='ddp' from a plain script: the other ranks start as forks of rank 0 where that is safe.

A forked worker is a copy of rank 0 at ``fabric.launch()`` (no second interpreter, no second
``import torch``); with a thread running, CUDA initialised or ``FABRIC_RELAUNCH=exec``, the worker is
a fresh interpreter re-running the script, as before. Both kinds of worker must train alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from fabric_core.launchers.forked_workers import RELAUNCH_ENV, ForkedWorker, fork_refusal

pytestmark = pytest.mark.timeout(600)

JOB = """
import gc, json, os, random, sys, threading, time, weakref
import torch
from fabric_core import Fabric

class Node:
    pass

if sys.argv[1] == "frozen":  # the script freezes its own objects (as a forking server does)
    gc.freeze()

cycle = Node()
cycle.self = cycle  # garbage only the collector frees, once the script drops it after launch()
cycle_ref = weakref.ref(cycle)

BEFORE_LAUNCH = os.urandom(8).hex()  # differs per interpreter, the same in a fork
random.seed(7)
if sys.argv[1] == "thread":
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
if sys.argv[1] == "compute":  # a parallel operation starts GNU OpenMP's threads, which a fork would hang in
    torch.randn(512, 512) @ torch.randn(512, 512)
fabric = Fabric(accelerator="cpu", strategy="ddp", devices=2)
fabric.launch()
del cycle
gc.collect()
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
x = torch.full((3, 4), float(fabric.global_rank + 1))
for _ in range(3):
    optimizer.zero_grad()
    fabric.backward(model(x).sum())
    optimizer.step()
row = {
    "rank": fabric.global_rank,
    "local": fabric.local_rank,
    "world": fabric.world_size,
    "env_rank": os.environ.get("RANK"),
    "before_launch": BEFORE_LAUNCH,
    "random": random.random(),
    "weight": model.weight.detach().flatten().tolist(),
    "frozen": gc.get_freeze_count(),
    "collected": cycle_ref() is None,
}
os.write(1, (json.dumps(row) + "\\n").encode())
if sys.argv[1] == "fail" and fabric.global_rank == 1:
    raise ValueError("rank one fails")
fabric.barrier()
"""


def _rows(stdout: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {row["rank"]: row for row in rows}


@pytest.fixture
def job(script_runner):
    def run(mode: str, **env: str) -> subprocess.CompletedProcess[str]:
        return script_runner(JOB, mode, timeout=300, env=env)

    return run


@pytest.mark.multiprocess
def test_workers_are_forks_and_train_like_fresh_interpreters(job):
    forked = job("plain", OMP_NUM_THREADS="2")  # numpy's OpenBLAS threads run: they are fork-safe
    assert forked.returncode == 0, forked.stderr
    fresh = job("plain", **{RELAUNCH_ENV: "exec"})
    assert fresh.returncode == 0, fresh.stderr
    forked_rows, fresh_rows = _rows(forked.stdout), _rows(fresh.stdout)
    assert sorted(forked_rows) == sorted(fresh_rows) == [0, 1]
    for rows in (forked_rows, fresh_rows):
        assert [(rows[r]["local"], rows[r]["world"]) for r in (0, 1)] == [(0, 2), (1, 2)]
        assert rows[1]["env_rank"] == "1"  # the worker sees its rank's variables, as a re-run script does
        assert rows[0]["weight"] == rows[1]["weight"]  # DDP kept the replicas equal
        assert rows[0]["random"] == rows[1]["random"]  # seeded before launch: the same stream on every rank
    assert forked_rows[0]["weight"] == fresh_rows[0]["weight"]
    # A forked worker keeps what it was forked with out of its collections (gc.freeze: fewer pages copied, a
    # faster exit); rank 0 and fresh interpreters collect as usual, the garbage from before launch() included.
    assert forked_rows[1]["frozen"] > 0
    assert [forked_rows[0]["frozen"], fresh_rows[0]["frozen"], fresh_rows[1]["frozen"]] == [0, 0, 0]
    assert forked_rows[0]["collected"] and fresh_rows[0]["collected"] and fresh_rows[1]["collected"]
    assert forked_rows[0]["before_launch"] == forked_rows[1]["before_launch"]  # rank 1 is a copy of rank 0
    assert fresh_rows[0]["before_launch"] != fresh_rows[1]["before_launch"]  # rank 1 re-ran the script


@pytest.mark.multiprocess
def test_a_script_that_froze_its_objects_keeps_them_frozen_in_rank_zero(job):
    proc = job("frozen")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert rows[0]["before_launch"] == rows[1]["before_launch"]  # forked
    assert rows[0]["frozen"] > 0 and rows[1]["frozen"] > 0  # launch() did not undo the script's gc.freeze()


@pytest.mark.multiprocess
@pytest.mark.parametrize("mode", ["thread", "compute"])
def test_threads_before_launch_make_the_workers_fresh_interpreters(job, mode):
    proc = job(mode, OMP_NUM_THREADS="2")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert rows[0]["before_launch"] != rows[1]["before_launch"]
    assert rows[0]["weight"] == rows[1]["weight"]


@pytest.mark.multiprocess
def test_a_forked_worker_that_raises_stops_the_job_and_is_named(job):
    proc = job("fail")
    assert proc.returncode != 0
    assert "ValueError: rank one fails" in proc.stderr
    assert "rank 1" in proc.stderr


def test_fork_refusal_names_the_reason(monkeypatch):
    monkeypatch.setenv(RELAUNCH_ENV, "exec")
    assert fork_refusal() == f"{RELAUNCH_ENV}=exec"
    monkeypatch.setenv(RELAUNCH_ENV, "sometimes")
    with pytest.raises(ValueError, match="'fork' .* or 'exec'"):
        fork_refusal()
    monkeypatch.delenv(RELAUNCH_ENV)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert "threads are running" in (fork_refusal() or "")
    finally:
        stop.set()
        thread.join()


def test_forked_worker_reports_exit_codes_like_popen():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    worker = ForkedWorker(pid)
    assert worker.wait(timeout=60) == 3 and worker.poll() == 3
    code = "import time; time.sleep(60)"
    pid = os.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    worker = ForkedWorker(pid)
    assert worker.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=0.05)
    worker.kill()
    assert worker.wait() == -9
