"""Zero-argument factories registered under ``fabric_core.strategies`` for the named variants."""

from __future__ import annotations

from fabric_core.plugins.strategy import Strategy


def ddp() -> Strategy:
    """DDP; the script re-runs itself for the other ranks (``fabric.launch()`` needs no function)."""
    from fabric_core.strategies.ddp import DDPStrategy

    return DDPStrategy(start_method="popen")


def ddp_spawn() -> Strategy:
    from fabric_core.strategies.ddp import DDPStrategy

    strategy = DDPStrategy(start_method="spawn")
    strategy.name = "ddp_spawn"  # type: ignore[misc]
    return strategy


def ddp_fork() -> Strategy:
    from fabric_core.strategies.ddp import DDPStrategy

    strategy = DDPStrategy(start_method="fork")
    strategy.name = "ddp_fork"  # type: ignore[misc]
    return strategy


def ddp_notebook() -> Strategy:
    """Forked processes: works in Jupyter, where the script cannot be re-run."""
    from fabric_core.strategies.ddp import DDPStrategy

    strategy = DDPStrategy(start_method="fork")
    strategy.name = "ddp_notebook"  # type: ignore[misc]
    return strategy


def ddp_find_unused_parameters_true() -> Strategy:
    from fabric_core.strategies.ddp import DDPStrategy

    strategy = DDPStrategy(start_method="popen", find_unused_parameters=True)
    strategy.name = "ddp_find_unused_parameters_true"  # type: ignore[misc]
    return strategy


def ddp_spawn_find_unused_parameters_true() -> Strategy:
    from fabric_core.strategies.ddp import DDPStrategy

    strategy = DDPStrategy(start_method="spawn", find_unused_parameters=True)
    strategy.name = "ddp_spawn_find_unused_parameters_true"  # type: ignore[misc]
    return strategy


def fsdp() -> Strategy:
    from fabric_core.strategies.fsdp import FSDPStrategy

    return FSDPStrategy()


def fsdp_cpu_offload() -> Strategy:
    """FSDP with sharded parameters, gradients and the optimizer step kept in CPU memory."""
    from fabric_core.strategies.fsdp import FSDPStrategy

    strategy = FSDPStrategy(cpu_offload=True)
    strategy.name = "fsdp_cpu_offload"  # type: ignore[misc]
    return strategy


def dp() -> Strategy:
    """Lightning's ``dp`` (``torch.nn.DataParallel``): runs as ``ddp``, one process per device.

    On CPUs Lightning does the same; on GPUs fabric has no single-process DataParallel, which torch
    itself advises against in favour of DistributedDataParallel.
    """
    from fabric_core.strategies.ddp import DDPStrategy
    from fabric_core.utilities.interactive import interactive_session
    from fabric_core.utilities.rank_zero import rank_zero_warn

    rank_zero_warn(
        "strategy='dp' is not supported on CPUs, and fabric has no single-process DataParallel on GPUs either; "
        "hence setting strategy='ddp' (one process per device, gradients all-reduced), which torch recommends "
        "over DataParallel. Pass strategy='ddp' to silence this warning, or 'ddp_notebook' in a notebook.",
        stacklevel=2,
    )
    if interactive_session():
        return ddp_notebook()
    return DDPStrategy(start_method="popen")
