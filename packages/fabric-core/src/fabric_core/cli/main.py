"""The ``fabric`` command: ``fabric run SCRIPT`` starts a script on several processes or machines."""

from __future__ import annotations

import os
import sys

import click

from fabric_core.cli.choices import accelerator_choice, precision_choice, strategy_choice
from fabric_core.connector import CLI_ENV

#: torchrun's rendezvous port on machine 0 for multi-machine jobs (Lightning Fabric's default too).
DEFAULT_MAIN_PORT = 29400

_RUN_EXAMPLES = """
\b
Examples:
  fabric run --devices 2 train.py --lr 0.1       # 2 processes; --lr goes to train.py
  fabric run --accelerator cuda --devices 0,1 --precision bf16-mixed train.py
  # two machines, 2 processes each (run one command on each machine):
  fabric run --devices 2 --num-nodes 2 --node-rank 0 --main-address 10.0.0.1 --main-port 29400 train.py
  fabric run --devices 2 --num-nodes 2 --node-rank 1 --main-address 10.0.0.1 --main-port 29400 train.py

Options go before SCRIPT; everything after SCRIPT is passed to the script unchanged.
"""


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from fabric_core.__about__ import __version__
    from fabric_core.cli.identity import version_report

    click.echo(version_report(__version__))
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version, and which package's `fabric` command this is.",
)
def cli() -> None:
    """fabric: run your PyTorch training script on any hardware, on one machine or many.

    Your script creates `Fabric(...)` and calls `fabric.launch()` as usual; the options given here
    choose the accelerator, strategy, devices and precision wherever the script leaves them at
    their defaults. Giving a different value in both places is an error.
    """


@cli.command(
    "run",
    epilog=_RUN_EXAMPLES,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--accelerator",
    type=accelerator_choice(),
    default=None,
    help="An installed accelerator (cpu, cuda, tpu ...) or auto. Default: what the script says, else auto.",
)
@click.option(
    "--strategy",
    type=strategy_choice(),
    default=None,
    help="An installed strategy (ddp, fsdp, deepspeed_stage_2 ...). Default: what the script says, else auto.",
)
@click.option(
    "--devices",
    default=None,
    help="Devices (processes) per machine: a count, -1 for all, or indices like 0,1. Default: 1.",
)
@click.option(
    "--num-nodes",
    "--num_nodes",
    "num_nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of machines.",
)
@click.option(
    "--node-rank",
    "--node_rank",
    "node_rank",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of this machine (0 is the main one).",
)
@click.option(
    "--main-address",
    "--main_address",
    "main_address",
    default="127.0.0.1",
    show_default=True,
    help="Address of machine 0.",
)
@click.option(
    "--main-port",
    "--main_port",
    "main_port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"Port on machine 0 (multi-machine jobs; default {DEFAULT_MAIN_PORT}). One machine picks a free port itself.",
)
@click.option(
    "--precision",
    type=precision_choice(),
    default=None,
    help="32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true, or a name an installed plugin adds.",
)
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(
    ctx: click.Context,
    script: str,
    accelerator: str | None,
    strategy: str | None,
    devices: str | None,
    num_nodes: int,
    node_rank: int,
    main_address: str,
    main_port: int | None,
    precision: str | None,
    script_args: tuple[str, ...],
) -> None:
    """Run SCRIPT with SCRIPT_ARGS on --devices processes per machine (torch's elastic launcher)."""
    from fabric_core.errors import MisconfigurationError

    try:
        nproc = _count_processes(accelerator, devices)
    except MisconfigurationError as err:
        raise click.BadParameter(str(err), param_hint="--devices / --accelerator") from None
    if node_rank >= num_nodes:
        raise click.BadParameter(
            f"--node-rank {node_rank} must be below --num-nodes {num_nodes}.", param_hint="--node-rank"
        )
    given = {"accelerator": accelerator, "strategy": strategy, "devices": devices, "precision": precision}
    if num_nodes > 1:
        given["num_nodes"] = str(num_nodes)
    for field, value in given.items():
        if value is not None:
            os.environ[CLI_ENV[field]] = str(value)
    set_omp_threads(nproc)
    sys.exit(launch_elastic(script, script_args, nproc, num_nodes, node_rank, main_address, main_port))


def set_omp_threads(processes: int) -> None:
    """Give each process an equal share of the cores through ``OMP_NUM_THREADS``, unless the user set it.

    As Lightning's ``fabric run`` does; torchrun would otherwise force 1 thread per process.
    """
    from fabric_core.utilities.cpus import suggested_num_threads

    os.environ.setdefault("OMP_NUM_THREADS", str(suggested_num_threads(processes)))


def _count_processes(accelerator: str | None, devices: str | None) -> int:
    """How many processes per machine ``--devices`` means for the chosen accelerator."""
    if devices is None:
        return 1
    from fabric_core.connector import _choose_accelerator

    return len(_choose_accelerator(accelerator).parse_devices(devices))


def launch_elastic(
    script: str,
    script_args: tuple[str, ...],
    nproc: int,
    num_nodes: int,
    node_rank: int,
    main_address: str,
    main_port: int | None,
) -> int:
    """Start the workers with ``torch.distributed.run``; returns the exit code, naming any failed rank."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = [f"--nproc-per-node={nproc}"]
    if num_nodes == 1 and main_port is None:
        args.append("--standalone")  # rendezvous on a free local port: parallel jobs never collide
    else:
        args += [
            f"--nnodes={num_nodes}",
            f"--node-rank={node_rank}",
            f"--master-addr={main_address}",
            f"--master-port={main_port or DEFAULT_MAIN_PORT}",
        ]
    args += [script, *script_args]
    import shutil
    import tempfile

    from fabric_core.launchers.failures import FAILURE_DIR_ENV, RankEnd, describe_exit, first_failure, recorded_failures

    failure_dir = tempfile.mkdtemp(prefix="fabric-failures-")
    os.environ[FAILURE_DIR_ENV] = failure_dir  # workers record an uncaught exception there, timed
    try:
        run(get_args_parser().parse_args(args))
    except ChildFailedError as err:
        # One policy for every launcher (launchers/failures.py): a rank killed by a signal the agent does not
        # send recorded nothing and is the cause; otherwise the earliest recorded exception; then exit codes.
        recorded = {r: (stamp, name) for stamp, r, name in reversed(recorded_failures(failure_dir))}
        ends = []
        for r, f in err.failures.items():
            stamp, name = recorded.get(r, (f.timestamp, None))
            ends.append(RankEnd(r, exitcode=f.exitcode, raised=name, time=stamp))
        ends += [RankEnd(r, raised=name, time=stamp) for r, (stamp, name) in recorded.items() if r not in err.failures]
        first = first_failure(ends)
        assert first is not None  # torch reports at least one failed rank
        rank = first.rank
        if first.raised is not None:
            how = f"raised {first.raised}"
        else:
            how = describe_exit(first.exitcode or 0)
            if num_nodes > 1 and (first.exitcode or 0) > 0:
                # No error of its own was recorded: it lost its peers, and they are on the other node(s).
                lost = [n for n in range(num_nodes) if n != node_rank]
                where = f"node {lost[0]}" if len(lost) == 1 else f"one of nodes {lost}"
                how += f" after losing its connection to {where} (that node stopped or failed: see its log)"
        others = sorted(r for r in err.failures if r != rank)
        after = f"; ranks {others} were stopped or failed after it" if others else ""
        click.echo(f"[fabric] rank {rank} {how}{after}. The job was stopped.", err=True)
        return 1
    finally:
        shutil.rmtree(failure_dir, ignore_errors=True)
    return 0


@cli.command("consolidate")
@click.argument("folder")
@click.option(
    "--output",
    "--output_file",
    "--output-file",
    "-o",
    "output",
    default=None,
    help="The file to write (a path or fsspec URL). Default: FOLDER.consolidated.pt",
)
@click.option("--no-verify", is_flag=True, default=False, help="Skip checking the folder's checksums.")
def consolidate_command(folder: str, output: str | None, no_verify: bool) -> None:
    """Turn a sharded checkpoint FOLDER (FSDP, strategy state_dict_type='sharded') into one file.

    FOLDER and the output may be local paths or fsspec URLs (s3://bucket/ck; credentials come from the
    filesystem's usual environment variables). The file loads with fabric.load / torch.load in a single
    process, on any number of devices.
    """
    from fabric_core.checkpoint.consolidate import consolidate
    from fabric_core.checkpoint.errors import CheckpointError

    try:
        target = consolidate(folder, output, verify=not no_verify)
    except CheckpointError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {target}")


def main() -> None:
    """Console-script entry point."""
    cli()
