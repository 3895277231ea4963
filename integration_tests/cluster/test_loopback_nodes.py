"""Two "nodes" on this machine's loopback (node 0 at 127.0.0.2): multi-node `fabric run`, and a node lost mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import DIGITS_ARGS, EXAMPLE, PROBE, PYTHON, TIMEOUT, clean_env, probes, result_lines

pytestmark = [pytest.mark.cluster, pytest.mark.multiprocess, pytest.mark.timeout(900)]

MAIN_ADDRESS = "127.0.0.2"  # loopback only: every address used is in 127.0.0.0/8


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((MAIN_ADDRESS, 0))
        return s.getsockname()[1]


def _start_node(node_rank: int, port: int, folder: Path, *script_args: str) -> subprocess.Popen[str]:
    cli = [PYTHON, "-m", "fabric_core.cli", "run", "--accelerator", "cpu", "--num-nodes", "2"]
    cli += ["--node-rank", str(node_rank), "--main-address", MAIN_ADDRESS, "--main-port", str(port)]
    # gloo binds to the loopback interface too: no other address is ever a target.
    env = clean_env({"GLOO_SOCKET_IFNAME": "lo"})
    with open(folder / f"node{node_rank}.out", "w") as out, open(folder / f"node{node_rank}.err", "w") as err:
        return subprocess.Popen(
            [*cli, PROBE, EXAMPLE, *script_args],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def test_two_loopback_nodes_train_like_two_local_processes(reference_lines, tmp_path):
    port = _free_port()
    nodes = [_start_node(rank, port, tmp_path, *DIGITS_ARGS) for rank in (0, 1)]
    try:
        codes = [node.wait(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            _stop(node)
    outputs = [(tmp_path / f"node{r}.out").read_text() for r in (0, 1)]
    errors = [(tmp_path / f"node{r}.err").read_text() for r in (0, 1)]
    assert codes == [0, 0], "\n".join(outputs + errors)
    for node_rank, output in enumerate(outputs):
        (probe,) = probes(output)
        assert probe["environment"] == "TorchElasticEnvironment"
        assert probe["rank"] == node_rank and probe["node_rank"] == node_rank and probe["world_size"] == 2
        assert probe["main_address"] == MAIN_ADDRESS
    assert "Training on 2 process(es), ddp" in outputs[0]
    assert result_lines(outputs[0]) == reference_lines  # rank 0 (node 0) prints the results


def test_a_node_killed_mid_run_stops_the_other_with_a_message_naming_it(tmp_path):
    port = _free_port()
    nodes = [_start_node(rank, port, tmp_path, "--strategy", "ddp", "--epochs", "200") for rank in (0, 1)]
    try:
        deadline = time.monotonic() + TIMEOUT
        while "epoch 1/200" not in (tmp_path / "node0.out").read_text():  # training is under way on both nodes
            assert all(node.poll() is None for node in nodes), (tmp_path / "node0.err").read_text()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        os.killpg(nodes[1].pid, signal.SIGKILL)  # node 1 disappears: its launcher and its worker
        # Far below the collective timeout (30 minutes): the lost connection is noticed at the next collective.
        code = nodes[0].wait(timeout=TIMEOUT)
    finally:
        for node in nodes:
            _stop(node)
    error = (tmp_path / "node0.err").read_text()
    assert code != 0
    assert "node 1" in error, error
    assert "epoch 200/200" not in (tmp_path / "node0.out").read_text()
