"""The error raised for checkpoints that cannot be read."""

from fabric_core.errors import FabricError


class CheckpointError(FabricError, RuntimeError):
    """A checkpoint file is missing, damaged, foreign, or from a newer format."""
