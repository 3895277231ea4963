"""Version of the fabric-core distribution (read by hatchling and tools/)."""

__version__ = "0.1.0"
