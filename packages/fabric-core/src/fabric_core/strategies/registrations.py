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
