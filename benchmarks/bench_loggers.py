"""Logging overhead: 10,000 scalars through a fabric-loggers logger against the tracker library's own API.

Each contender logs the same ``N`` scalars (one metric per call, steps 0..N-1) into a fresh run and ends
it; the pair for a tracker is timed in interleaved rounds, and the table reports the median per-round
ratio ``logger / library`` and its spread (half the interquartile range of the per-round ratios). Target: <= 1.05 (at
most 5% over calling the library directly). Trackers that are not installed are left out; W&B and Comet
run offline, MLflow on a local sqlite store (one request per call: ~10-50 ms each here, so 10,000 scalars
take minutes per run; ``--rounds`` is per tracker), DVCLive in a scratch folder outside any Git repository.
``--clock cpu`` times this process's CPU time instead of elapsed time, which other processes on a shared
machine disturb less. As ``timeit`` does for its loops, a full garbage collection runs (untimed) before each run:
the benchmark's own heap (torch and every tracker imported) makes a generation-2 collection cost ~0.3 s, and
without it that pause lands in whichever run crosses the collector's threshold (seen: +40% on one DVCLive
run of 0.75 s). The loggers are told their rank (``set_global_rank(0)``) as ``Fabric(loggers=...)`` does once the job is
set up.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, fmt_time, header, interleave, table, verdict

TARGET_RATIO = 1.05


def _fresh(root: str, name: str) -> str:
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def tensorboard_pair(root: str, n: int, clock: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], float]]:
    from fabric_loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    def direct() -> float:
        folder = _fresh(root, "tb_direct")
        start = clock()
        writer = SummaryWriter(folder)
        for step in range(n):
            writer.add_scalar("loss", step * 0.5, global_step=step)
        writer.close()
        return clock() - start

    def logger() -> float:
        folder = _fresh(root, "tb_logger")
        start = clock()
        tb = TensorBoardLogger(folder, name=None, version=0, flush_logs_every_n_steps=None)
        tb.set_global_rank(0)  # as Fabric does once the job is set up
        for step in range(n):
            tb.log_metrics({"loss": step * 0.5}, step=step)
        tb.finalize("success")
        return clock() - start

    return direct, logger


def mlflow_pair(root: str, n: int, clock: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], float]]:
    from fabric_loggers import MLflowLogger
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    def fresh_store(name: str) -> tuple[str, MlflowClient, str]:
        """A new sqlite store per run, its tables and experiment made before the clock starts: a store that
        grows run after run would make whichever contender runs later in a round pay for the other's rows."""
        path = os.path.join(_fresh(root, f"{name}-{time.time_ns()}"), "mlflow.db")  # MLflow caches stores by URI
        uri = "sqlite:///" + path
        client = MlflowClient(uri)
        return uri, client, client.create_experiment("bench")

    def direct() -> float:
        _, client, experiment_id = fresh_store("mlflow_direct")
        start = clock()
        run_id = client.create_run(experiment_id).info.run_id
        for step in range(n):
            metric = Metric(key="loss", value=step * 0.5, timestamp=int(time.time() * 1000), step=step)
            client.log_batch(run_id, metrics=[metric])
        client.set_terminated(run_id, status="FINISHED")
        return clock() - start

    def logger() -> float:
        uri, _, _ = fresh_store("mlflow_logger")
        start = clock()
        mlflow_logger = MLflowLogger(experiment_name="bench", tracking_uri=uri)
        mlflow_logger.set_global_rank(0)
        for step in range(n):
            mlflow_logger.log_metrics({"loss": step * 0.5}, step=step)
        mlflow_logger.finalize("success")
        return clock() - start

    return direct, logger


def wandb_pair(root: str, n: int, clock: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], float]]:
    import wandb
    from fabric_loggers import WandbLogger

    def direct() -> float:
        folder = _fresh(root, "wandb_direct")
        start = clock()
        run = wandb.init(project="bench", dir=folder, mode="offline", reinit="create_new")
        for step in range(n):
            run.log({"loss": step * 0.5}, step=step)
        run.finish()
        return clock() - start

    def logger() -> float:
        folder = _fresh(root, "wandb_logger")
        start = clock()
        wandb_logger = WandbLogger(project="bench", save_dir=folder, offline=True)
        wandb_logger.set_global_rank(0)
        for step in range(n):
            wandb_logger.log_metrics({"loss": step * 0.5}, step=step)
        wandb_logger.finalize("success")
        return clock() - start

    return direct, logger


def comet_pair(root: str, n: int, clock: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], float]]:
    import comet_ml
    from fabric_loggers import CometLogger
    from fabric_loggers.comet_logger import _QUIET

    def direct() -> float:
        folder = _fresh(root, "comet_direct")
        start = clock()
        experiment = comet_ml.OfflineExperiment(project_name="bench", offline_directory=folder, **_QUIET)
        for step in range(n):
            experiment.log_metrics({"loss": step * 0.5}, step=step)
        experiment.end()
        return clock() - start

    def logger() -> float:
        folder = _fresh(root, "comet_logger")
        start = clock()
        comet_logger = CometLogger(project_name="bench", offline=True, save_dir=folder)
        comet_logger.set_global_rank(0)
        for step in range(n):
            comet_logger.log_metrics({"loss": step * 0.5}, step=step)
        comet_logger.finalize("success")
        return clock() - start

    return direct, logger


def dvclive_pair(root: str, n: int, clock: Callable[[], float]) -> tuple[Callable[[], float], Callable[[], float]]:
    from dvclive import Live
    from fabric_loggers import DVCLiveLogger

    def direct() -> float:
        folder = _fresh(root, "dvclive_direct")
        start = clock()
        live = Live(folder, save_dvc_exp=False, dvcyaml=None)
        for step in range(n):
            live.step = step
            live.log_metric("loss", step * 0.5)
        live.end()
        return clock() - start

    def logger() -> float:
        folder = _fresh(root, "dvclive_logger")
        start = clock()
        dvclive_logger = DVCLiveLogger(dir=folder, save_dvc_exp=False, dvcyaml=None)
        dvclive_logger.set_global_rank(0)
        for step in range(n):
            dvclive_logger.log_metrics({"loss": step * 0.5}, step=step)
        dvclive_logger.finalize("success")
        return clock() - start

    return direct, logger


TRACKERS = {
    "tensorboard": ("tensorboard", tensorboard_pair),
    "mlflow": ("mlflow", mlflow_pair),
    "wandb": ("wandb", wandb_pair),
    "comet": ("comet_ml", comet_pair),
    "dvclive": ("dvclive", dvclive_pair),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scalars", type=int, default=10_000, help="scalars logged per run (default 10,000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1,000 scalars (a smoke run)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time, all threads (less disturbed by other "
        "processes on a shared machine; a tracker's helper processes, such as W&B's service, are not counted)",
    )
    parser.add_argument("trackers", nargs="*", help=f"which (default: every installed one): {', '.join(TRACKERS)}")
    args = parser.parse_args(argv)
    n, rounds = (1_000, 2) if args.quick else (args.scalars, args.rounds)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("COMET_CONFIG", os.devnull)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")

    rows = []
    unknown = sorted(set(args.trackers) - set(TRACKERS))
    if unknown:
        parser.error(f"unknown trackers {unknown}; choose from {', '.join(TRACKERS)}")
    with tempfile.TemporaryDirectory() as root:
        start_dir = os.getcwd()
        os.chdir(root)  # DVCLive runs `dvc init` in a Git repository it finds from the working directory
        try:
            clock = time.process_time if args.clock == "cpu" else time.perf_counter
            rows = [_measure(name, root, n, rounds, clock) for name in args.trackers or TRACKERS]
        finally:
            os.chdir(start_dir)
    title = f"Logging {n:,} scalars: fabric-loggers vs the tracker's own API ({args.clock} clock, median of {rounds} rounds)"
    emit(header(title))
    emit(
        table(
            ["tracker", "library per scalar", "logger per scalar", "ratio ± spread", "target"], [r for r in rows if r]
        )
    )
    emit(
        "Each run: start, log every scalar at its step, end (the same for both); ratio: median per-round logger/library."
    )


def _collected_first(run: Callable[[], float]) -> Callable[[], float]:
    """``run`` after an untimed full garbage collection (see the module docstring)."""

    def collected() -> float:
        gc.collect()
        return run()

    return collected


def _measure(name: str, root: str, n: int, rounds: int, clock: Callable[[], float]) -> list[str] | None:
    """One table row: both contenders of ``name`` over ``rounds`` interleaved rounds (None: not installed)."""
    module, make_pair = TRACKERS[name]
    if importlib.util.find_spec(module) is None:
        return None
    for warm_up in make_pair(root, min(n, 100), clock):
        warm_up()  # imports and the first run's set-up, kept out of the timed rounds
    direct, logger = make_pair(root, n, clock)
    samples = interleave({"direct": _collected_first(direct), "logger": _collected_first(logger)}, rounds)
    ratio = samples.ratio("logger", "direct")
    return [
        name,
        fmt_time(samples.median("direct") / n),
        fmt_time(samples.median("logger") / n),
        f"{ratio:.3f} ±{samples.ratio_spread('logger', 'direct'):.3f}",
        f"<= {TARGET_RATIO} {verdict(ratio, TARGET_RATIO)}",
    ]


if __name__ == "__main__":
    main()
