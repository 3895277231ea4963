"""fabric-loggers: experiment loggers for ``Fabric(loggers=[...])``.

Both loggers write files on global rank 0 only and import their heavy libraries (TensorBoard,
PyYAML) on first write, so ``import fabric_loggers`` stays cheap.
"""

from fabric_loggers.__about__ import __version__
from fabric_loggers.csv_logger import CSVLogger
from fabric_loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "TensorBoardLogger", "__version__"]
