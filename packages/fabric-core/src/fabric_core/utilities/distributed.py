"""Lightning's ``lightning.fabric.utilities.distributed`` names that scripts import."""

from __future__ import annotations

from fabric_core.utilities.samplers import DistributedSamplerWrapper

__all__ = ["DistributedSamplerWrapper"]
