"""Many jobs started at once on one machine never collide on rendezvous ports, nor talk to each other."""

from __future__ import annotations

import re

import pytest
from fault_helpers import LAUNCHERS, start_job, write_script

JOB = r"""
import os, sys, torch

def work(fabric, job_id):
    rank = fabric.global_rank
    fabric.barrier()
    # a value only this job can produce: ranks of another job mixed in would change the sum
    total = fabric.all_reduce(torch.tensor(float(1000 * job_id + rank)), reduce_op="sum").item()
    world = fabric.all_gather(torch.tensor(job_id)).tolist()
    port = os.environ.get("MASTER_PORT", "")
    say(f"RESULT job={job_id} rank={rank} world={fabric.world_size} total={total} ids={world} port={port}")

if __name__ == "__main__":
    run_job(sys.argv[1], work, int(sys.argv[2]))
"""


@pytest.mark.parametrize(
    "launchers",
    [
        ["ddp"] * 4,
        ["ddp_spawn", "ddp_spawn", "fabric_run", "torchrun"],
    ],
    ids=["4x_ddp", "2x_ddp_spawn+fabric_run+torchrun"],
)
def test_simultaneous_jobs_all_succeed(tmp_path, launchers):
    script = write_script(tmp_path, JOB)
    jobs = [
        start_job(tmp_path, [*LAUNCHERS[launcher](script), str(job_id)], name=f"job{job_id}")
        for job_id, launcher in enumerate(launchers)
    ]
    ports = []
    for job_id, job in enumerate(jobs):
        code = job.finish(timeout=240)
        assert code == 0, f"job {job_id} ({launchers[job_id]}) failed:\n{job.stderr[-4000:]}"
        rows = re.findall(
            r"RESULT job=(\d+) rank=(\d) world=(\d+) total=([\d.]+) ids=(\[[\d, ]+\]) port=(\d*)", job.stdout
        )
        assert sorted(int(r[1]) for r in rows) == [0, 1], job.stdout
        for row_job, _, world, total, ids, port in rows:
            assert int(row_job) == job_id and world == "2"
            assert float(total) == 2 * 1000 * job_id + 1
            assert ids == f"[{job_id}, {job_id}]"
            if port:
                ports.append((job_id, int(port)))
        assert not job.leftovers()
    by_port: dict[int, set[int]] = {}
    for job_id, port in ports:
        by_port.setdefault(port, set()).add(job_id)
    assert all(len(ids) == 1 for ids in by_port.values()), f"jobs shared a rendezvous port: {by_port}"
