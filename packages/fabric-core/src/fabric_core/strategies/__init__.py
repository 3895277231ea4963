"""Core's strategies: single device, DDP and FSDP on torch.distributed."""

from fabric_core.strategies.mesh_config import MeshConfig as MeshConfig
from fabric_core.strategies.model_parallel import ModelParallelStrategy as ModelParallelStrategy
