"""Real 2-process jobs over gloo on loopback: every launch mode, collectives, sharding, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]  # jobs of fresh interpreters, each importing torch

# One script exercising the API in every rank; each rank prints one JSON line.
COLLECTIVES = r"""
import json, sys, time
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from fabric_core import Fabric

def work(fabric):
    rank, world = fabric.global_rank, fabric.world_size
    out = {"rank": rank, "world": world, "local": fabric.local_rank, "node": fabric.node_rank}
    gathered = fabric.all_gather({"t": torch.tensor([rank, 10 * rank]), "n": rank})
    out["gather_t"] = gathered["t"].tolist()
    out["gather_n"] = gathered["n"].tolist()
    value = torch.tensor(float(rank + 1))
    out["reduce"] = {op: fabric.all_reduce(value, reduce_op=op).item() for op in ("sum", "mean", "max", "min")}
    out["broadcast"] = fabric.broadcast({"from": rank}, src=world - 1)
    # a gradient flows back through all_gather(sync_grads=True)
    x = torch.tensor([float(rank + 1)], requires_grad=True)
    fabric.all_gather(x, sync_grads=True).sum().backward()
    out["gather_grad"] = x.grad.item()
    # rank_zero_first: rank 0 writes, the others read it afterwards
    marker = sys.argv[2] + "/marker"
    with fabric.rank_zero_first():
        if rank == 0:
            time.sleep(0.5)
            open(marker, "w").write("ready")
        else:
            out["saw_marker"] = open(marker).read()
    # data sharding: disjoint shards covering the data, reshuffled each epoch
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.arange(16)), batch_size=4, shuffle=True))
    out["epochs"] = [[int(i) for (b,) in loader for i in b] for _ in range(2)]
    # DDP keeps replicas equal; no_backward_sync leaves gradients local
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False)
    model, opt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    data = torch.full((4, 2), float(rank + 1))
    with fabric.no_backward_sync(model, enabled=True):
        fabric.backward(model(data).sum())
    out["grad_unsynced"] = model.module.weight.grad.tolist()
    opt.zero_grad()
    fabric.backward(model(data).sum())
    out["grad_synced"] = model.module.weight.grad.tolist()
    opt.step()
    out["weight"] = model.module.weight.tolist()
    fabric.barrier()
    return out

if __name__ == "__main__":
    mode = sys.argv[1]
    fabric = Fabric(accelerator="cpu", strategy=mode, devices=2)
    if mode == "ddp":
        fabric.launch()
        # one write per line: several ranks share the pipe, and print() writes its pieces separately
        sys.stdout.write("RESULT " + json.dumps(work(fabric)) + "\n"); sys.stdout.flush()
    else:
        result = fabric.launch(work)
        sys.stdout.write("RANK0 " + json.dumps(result) + "\n"); sys.stdout.flush()
"""


def _results(stdout: str, prefix: str = "RESULT") -> dict[int, dict]:
    rows = [json.loads(line.split(" ", 1)[1]) for line in stdout.splitlines() if line.startswith(prefix + " ")]
    return {row["rank"]: row for row in rows}


def _check_rank_results(results: dict[int, dict], world: int = 2) -> None:
    assert sorted(results) == list(range(world))
    for rank, row in results.items():
        assert row["world"] == world
        assert row["gather_t"] == [[r, 10 * r] for r in range(world)]
        assert row["gather_n"] == list(range(world))
        total = sum(range(1, world + 1))
        assert row["reduce"] == {"sum": total, "mean": total / world, "max": world, "min": 1}
        assert row["broadcast"] == {"from": world - 1}
        assert row["gather_grad"] == world  # each rank's x appears once in each of the world gathers
        if rank != 0:
            assert row["saw_marker"] == "ready"
        assert row["grad_unsynced"] == [[4.0 * (rank + 1)] * 2]
        assert row["grad_synced"] == [[4.0 * (world + 1) / 2] * 2]  # mean over ranks
    for epoch in range(2):
        shards = [results[r]["epochs"][epoch] for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(16))
    assert results[0]["epochs"][0] != results[0]["epochs"][1]
    assert all(row["weight"] == results[0]["weight"] for row in results.values())


def test_ddp_relaunches_the_script_and_everything_works(script_runner, tmp_path):
    """strategy='ddp': the script re-runs itself for rank 1; collectives, sharding, no_backward_sync, DDP sync."""
    proc = script_runner(COLLECTIVES, "ddp", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    results = _results(proc.stdout)
    _check_rank_results(results)
    assert [results[r]["local"] for r in (0, 1)] == [0, 1]


@pytest.mark.parametrize("mode", ["ddp_spawn", "ddp_fork"])
def test_launch_function_returns_rank_zero_result(script_runner, tmp_path, mode):
    proc = script_runner(
        COLLECTIVES.replace(
            "return out", 'sys.stdout.write("RESULT " + json.dumps(out) + "\\n"); sys.stdout.flush(); return out'
        ),
        mode,
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    _check_rank_results(_results(proc.stdout))
    assert _results(proc.stdout, "RANK0")[0]["rank"] == 0


def test_torchrun_runs_the_script_unchanged(script_runner, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    source = COLLECTIVES.replace("strategy=mode, devices=2", 'strategy="ddp"')
    proc = script_runner(source, "ddp", str(tmp_path), command=torchrun)
    assert proc.returncode == 0, proc.stderr
    _check_rank_results(_results(proc.stdout))


def test_fabric_run_cli_chooses_strategy_and_devices(script_runner, tmp_path):
    source = COLLECTIVES.replace('Fabric(accelerator="cpu", strategy=mode, devices=2)', "Fabric()")
    fabric_cli = [
        sys.executable,
        "-m",
        "fabric_core.cli",
        "run",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
    ]
    proc = script_runner(source, "ddp", str(tmp_path), command=fabric_cli)
    assert proc.returncode == 0, proc.stderr
    _check_rank_results(_results(proc.stdout))


def test_fabric_run_conflicting_with_code_fails_clearly(script_runner, tmp_path):
    fabric_cli = [sys.executable, "-m", "fabric_core.cli", "run", "--devices", "2", "--strategy", "fsdp"]
    proc = script_runner(COLLECTIVES, "ddp_spawn", str(tmp_path), command=fabric_cli)
    assert proc.returncode != 0
    assert "conflicts with --strategy fsdp" in proc.stderr


def test_two_fabric_run_commands_form_one_four_process_job(tmp_path):
    """Multi-node on one machine: --num-nodes 2 with node ranks 0 and 1, 2 processes each."""
    from fabric_core.launchers.ports import find_free_port

    script = tmp_path / "script.py"
    script.write_text(COLLECTIVES.replace('Fabric(accelerator="cpu", strategy=mode, devices=2)', "Fabric()"))
    port = str(find_free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FABRIC_", "MASTER_", "RANK", "WORLD"))}
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fabric_core.cli",
                "run",
                "--accelerator",
                "cpu",
                "--devices",
                "2",
                "--num-nodes",
                "2",
                "--node-rank",
                str(node),
                "--main-address",
                "127.0.0.1",
                "--main-port",
                port,
                str(script),
                "ddp",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    results = {**_results(outputs[0][0]), **_results(outputs[1][0])}
    _check_rank_results(results, world=4)
    assert {(r["node"], r["local"]) for r in results.values()} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert {r["rank"] for r in results.values() if r["node"] == 1} == {2, 3}


FAILING = r"""
import os, sys, time
import torch
from fabric_core import Fabric

def work(fabric):
    sys.stdout.write(f"PID {fabric.global_rank} {os.getpid()}\n"); sys.stdout.flush()
    fabric.barrier()
    if fabric.global_rank == int(sys.argv[2]):
        raise ValueError("rank failed on purpose")
    fabric.barrier()  # the healthy rank waits here for the dead one (longer than the test waits)
    time.sleep(600)

if __name__ == "__main__":
    fabric = Fabric(accelerator="cpu", strategy=sys.argv[1], devices=2)
    if sys.argv[1] == "ddp":
        fabric.launch()
        work(fabric)
    else:
        fabric.launch(work)
"""


def _pids(stdout: str) -> list[int]:
    return [int(line.split()[2]) for line in stdout.splitlines() if line.startswith("PID ")]


def _assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}") and _alive(p)], "a worker was left running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(("mode", "failing_rank"), [("ddp", 1), ("ddp", 0), ("ddp_spawn", 1)])
def test_a_rank_that_raises_stops_the_whole_job(script_runner, mode, failing_rank):
    # The healthy rank would wait 600 s in the barrier, then sleep 600 s: only the launcher stopping it ends
    # the job before the 300 s hang guard (which fails the test with TimeoutExpired).
    proc = script_runner(FAILING, mode, str(failing_rank), timeout=300, env={"FABRIC_COLLECTIVE_TIMEOUT": "600"})
    assert proc.returncode != 0
    assert "rank failed on purpose" in proc.stderr  # the failing rank's own error is shown
    assert f"rank {failing_rank}" in proc.stderr
    _assert_gone(_pids(proc.stdout))


def test_fabric_run_names_the_failed_rank(script_runner):
    source = FAILING.replace('Fabric(accelerator="cpu", strategy=sys.argv[1], devices=2)', "Fabric()")
    cli = [sys.executable, "-m", "fabric_core.cli", "run", "--devices", "2", "--accelerator", "cpu"]
    proc = script_runner(source, "ddp", "1", command=cli, timeout=300, env={"FABRIC_COLLECTIVE_TIMEOUT": "600"})
    assert proc.returncode != 0
    assert "rank failed on purpose" in proc.stderr
    assert "[fabric] rank 1 raised ValueError" in proc.stderr
    _assert_gone(_pids(proc.stdout))


SUBCLASS = r"""
import torch
from fabric_core import Fabric

class MyFabric(Fabric):
    def run(self, offset):
        total = self.all_reduce(torch.tensor(float(self.global_rank)), reduce_op="sum")
        return total.item() + offset

if __name__ == "__main__":
    print("RESULT", MyFabric(accelerator="cpu", strategy="ddp_spawn", devices=2).run(10))
"""


def test_subclass_run_style_launches_processes(script_runner):
    proc = script_runner(SUBCLASS)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 11.0" in proc.stdout


@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")
def test_spawn_without_main_guard_gives_a_clear_error(script_runner):
    source = "from fabric_core import Fabric\ndef work(fabric):\n    pass\nFabric(accelerator='cpu', strategy='ddp_spawn', devices=2).launch(work)\n"
    proc = script_runner(source, timeout=120)
    assert proc.returncode != 0
    assert "__name__" in proc.stderr


RETURNS_TENSORS = r"""
import torch
from fabric_core import Fabric

def work(fabric):
    return {"weights": torch.full((3,), float(fabric.global_rank)), "rank": fabric.global_rank}

if __name__ == "__main__":
    result = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2).launch(work)
    print("RESULT", result["rank"], result["weights"].tolist())
"""


def test_spawned_rank_zero_can_return_tensors(script_runner):
    proc = script_runner(RETURNS_TENSORS)
    assert proc.returncode == 0, proc.stderr
    assert "RESULT 0 [0.0, 0.0, 0.0]" in proc.stdout
