"""Two real processes over gloo on loopback: only global rank 0 writes, and no rank ever waits on the logger."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fabric_loggers import CSVLogger, TensorBoardLogger
from loggers_testing import all_files, hparam_values, read_csv, scalars

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]  # spawned ranks import torch each

WORLD_SIZE = 2


def _use(logger, rank: int) -> None:
    """Everything a training script does with a logger; values carry the rank so the files say who wrote."""
    logger.log_hyperparams({"rank": rank, "lr": 0.1})
    for step in range(3):
        logger.log_metrics({"rank": rank, "x": step}, step=step)
    logger.save()
    if isinstance(logger, TensorBoardLogger):
        logger.log_graph(torch.nn.Linear(2, 1), torch.randn(1, 2))
    logger.finalize("success")


def _worker(rank: int, rendezvous: str, root: str, from_parent: list) -> None:
    # Before the process group exists a rank is known only from the launcher's environment (torchrun style).
    os.environ["RANK"] = str(rank)
    _use(CSVLogger(root, name="before_init"), rank)
    del os.environ["RANK"]  # from here on, only the process group can tell
    # A file rendezvous: no free port picked by the parent and bound seconds later (another process may take it).
    init = f"file://{rendezvous}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60))
    try:
        for logger in [*from_parent, CSVLogger(root, name="csv_here"), TensorBoardLogger(root, name="tb_here")]:
            _use(logger, rank)
        # Every rank got here without waiting on another: a logger that blocked one rank makes the other's
        # barrier raise after the group's 60 s timeout (counted from here, not from the ranks' start-up).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _run_ranks(function, args: tuple, timeout: float = 600.0) -> None:
    """Spawn WORLD_SIZE processes; fail (and kill them) if they are not all done within ``timeout`` seconds.

    A hang guard only: a blocked logger call is caught by the ranks' own barrier timeout."""
    context = mp.start_processes(function, args=args, nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"ranks still running after {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()


def test_only_rank_zero_writes_over_torch_distributed(tmp_path):
    root = str(tmp_path / "logs")
    # Built in a parent that is not part of the job, pickled into both workers (as ddp_spawn does).
    from_parent = [CSVLogger(root, name="csv_parent"), TensorBoardLogger(root, name="tb_parent")]
    _run_ranks(_worker, (str(tmp_path / "rendezvous"), root, from_parent))

    assert sorted(os.listdir(root)) == ["before_init", "csv_here", "csv_parent", "tb_here", "tb_parent"]
    for name in ("before_init", "csv_here", "csv_parent"):
        files = all_files(os.path.join(root, name))
        assert files == ["version_0/hparams.yaml", "version_0/metrics.csv"], name
        _, rows = read_csv(os.path.join(root, name, "version_0", "metrics.csv"))
        assert [(r["step"], r["rank"]) for r in rows] == [("0", "0"), ("1", "0"), ("2", "0")], name
    for name in ("tb_here", "tb_parent"):
        files = all_files(os.path.join(root, name))
        assert len(files) == 1 and files[0].startswith("version_0/events.out.tfevents"), (name, files)
        log_dir = os.path.join(root, name, "version_0")
        assert scalars(log_dir, "rank") == [(0, 0.0), (1, 0.0), (2, 0.0)]
        assert hparam_values(log_dir) == {"rank": 0.0, "lr": 0.1}


def _train(fabric, steps: int) -> str:
    """A user's training function under ``fabric.launch``: logs through Fabric on every rank."""
    model = torch.nn.Linear(2, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    for logger in fabric.loggers:
        logger.log_hyperparams({"lr": 0.1, "world_size": fabric.world_size})
    for _ in range(steps):
        loss = model(torch.randn(4, 2)).pow(2).mean()
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        fabric.log_dict({"loss": loss, "rank": fabric.global_rank})
    for logger in fabric.loggers:
        logger.finalize("success")
    fabric.barrier()  # no rank is held up by the loggers
    return fabric.logger.log_dir


def _check_rank_zero_files(root: str, steps: int) -> None:
    assert sorted(os.listdir(root)) == ["csv", "tb"]
    assert all_files(os.path.join(root, "csv")) == ["version_0/hparams.yaml", "version_0/metrics.csv"]
    _, rows = read_csv(os.path.join(root, "csv", "version_0", "metrics.csv"))
    assert [(r["step"], r["rank"]) for r in rows] == [(str(s), "0") for s in range(steps)]
    log_dir = os.path.join(root, "tb", "version_0")
    assert scalars(log_dir, "rank") == [(s, 0.0) for s in range(steps)]
    assert [step for step, _ in scalars(log_dir, "loss")] == list(range(steps))


def test_fabric_ddp_spawn_writes_on_rank_zero_only(tmp_path):
    from fabric_core import Fabric

    root = str(tmp_path)
    loggers = [TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")]
    fabric = Fabric(strategy="ddp_spawn", devices=2, accelerator="cpu", loggers=loggers)
    log_dir = fabric.launch(_train, 3)
    assert log_dir == os.path.join(root, "tb", "version_0")
    _check_rank_zero_files(root, 3)
    assert hparam_values(os.path.join(root, "tb", "version_0")) == {"lr": 0.1, "world_size": 2.0}


def test_fabric_ddp_fork_after_the_parent_opened_the_files(tmp_path):
    """Forked ranks inherit open writers whose threads did not survive the fork: they must open their own."""
    from fabric_core import Fabric

    root = str(tmp_path)
    tb, csv_logger = TensorBoardLogger(root, name="tb"), CSVLogger(root, name="csv")
    fabric = Fabric(strategy="ddp_fork", devices=2, accelerator="cpu", loggers=[tb, csv_logger])
    for logger in (tb, csv_logger):  # the parent (rank 0 before any process group) opens its files
        logger.log_metrics({"before_fork": 1.0}, step=0)
    fabric.launch(_train, 3)
    for logger in (tb, csv_logger):
        logger.finalize("success")
    _, rows = read_csv(os.path.join(root, "csv", "version_0", "metrics.csv"))
    # fabric.log_dict passes no step: the logger counts on from the step 0 the parent logged before the fork
    assert [(r["step"], r["rank"]) for r in rows if r["rank"]] == [(str(s), "0") for s in range(1, 4)]
    assert [r["before_fork"] for r in rows if r["before_fork"]] == ["1.0"]
    log_dir = os.path.join(root, "tb", "version_0")
    assert scalars(log_dir, "rank") == [(s, 0.0) for s in range(1, 4)]
    assert scalars(log_dir, "before_fork") == [(0, 1.0)]
