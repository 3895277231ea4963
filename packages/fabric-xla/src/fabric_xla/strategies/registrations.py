"""Zero-argument factories registered under ``fabric_core.strategies``."""

from __future__ import annotations

from fabric_core.plugins.strategy import Strategy


def single_xla() -> Strategy:
    from fabric_xla.strategies.single import SingleXLAStrategy

    return SingleXLAStrategy()


def xla() -> Strategy:
    from fabric_xla.strategies.data_parallel import XLAStrategy

    return XLAStrategy()


def xla_fsdp() -> Strategy:
    from fabric_xla.strategies.fsdp import XLAFSDPStrategy

    return XLAFSDPStrategy()


def xla_spmd() -> Strategy:
    from fabric_xla.strategies.spmd import XLASPMDStrategy

    return XLASPMDStrategy(mode="data_parallel")


def xla_spmd_fsdp() -> Strategy:
    from fabric_xla.strategies.spmd import XLASPMDStrategy

    return XLASPMDStrategy(mode="fully_sharded")
