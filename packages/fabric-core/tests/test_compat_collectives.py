"""Collectives behave as in Lightning Fabric 2.6: all_gather with one process, reduce ops by name or ReduceOp."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from fabric_core import Fabric


def test_all_gather_with_one_process_returns_the_data_unchanged():
    fabric = Fabric(accelerator="cpu")
    tensor = torch.tensor([[1.0, 2.0]])
    assert torch.equal(fabric.all_gather(tensor), tensor)
    gathered = fabric.all_gather({"t": torch.ones(3), "n": 5, "nested": [torch.zeros(2, 2)]})
    assert gathered["t"].shape == (3,)
    assert gathered["n"].shape == () and gathered["n"].item() == 5
    assert gathered["nested"][0].shape == (2, 2)
    assert "unchanged" in Fabric.all_gather.__doc__


@pytest.mark.parametrize(
    "op",
    ["sum", "SUM", "mean", "avg", "AVG", "max", "min", dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX],
)
def test_all_reduce_accepts_names_in_any_case_and_reduce_ops(op):
    fabric = Fabric(accelerator="cpu")
    assert fabric.all_reduce(torch.tensor(3.0), reduce_op=op).item() == 3.0


@pytest.mark.parametrize("op", ["median", "", dist.ReduceOp.PRODUCT, 3])
def test_all_reduce_refuses_other_ops_listing_the_valid_ones(op):
    with pytest.raises(ValueError, match="sum, mean, max, min"):
        Fabric(accelerator="cpu").all_reduce(torch.tensor(1.0), reduce_op=op)


TWO_PROCESS_COLLECTIVES = r"""
import json, sys
import torch
import torch.distributed as dist
from fabric_core import Fabric

def work(fabric):
    value = torch.tensor(float(fabric.global_rank + 1))  # 1 on rank 0, 2 on rank 1
    ops = {"avg": "avg", "MEAN": "MEAN", "ReduceOp.SUM": dist.ReduceOp.SUM, "ReduceOp.AVG": dist.ReduceOp.AVG,
           "ReduceOp.MAX": dist.ReduceOp.MAX, "ReduceOp.MIN": dist.ReduceOp.MIN}
    out = {"rank": fabric.global_rank}
    out["reduce"] = {name: fabric.all_reduce(value, reduce_op=op).item() for name, op in ops.items()}
    out["gather_shape"] = list(fabric.all_gather(torch.ones(3)).shape)
    sys.stdout.write("RESULT " + json.dumps(out) + "\n"); sys.stdout.flush()

if __name__ == "__main__":
    Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2).launch(work)
"""


@pytest.mark.multiprocess
def test_reduce_ops_and_gather_across_two_processes(preloaded_script_runner):
    proc = preloaded_script_runner(TWO_PROCESS_COLLECTIVES, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(row["rank"] for row in rows) == [0, 1]
    for row in rows:
        assert row["reduce"] == {
            "avg": 1.5,
            "MEAN": 1.5,
            "ReduceOp.SUM": 3.0,
            "ReduceOp.AVG": 1.5,  # gloo has no AVG: summed and divided, as in Lightning
            "ReduceOp.MAX": 2.0,
            "ReduceOp.MIN": 1.0,
        }
        assert row["gather_shape"] == [2, 3]
