"""fabric-loggers: experiment loggers for ``Fabric(loggers=[...])``.

Every logger writes on global rank 0 only and imports its library (TensorBoard, PyYAML, MLflow, W&B, Comet, DVCLive)
on first use, so ``import fabric_loggers`` stays cheap and imports no tracker library.
"""

from fabric_loggers.__about__ import __version__
from fabric_loggers.comet_logger import CometLogger
from fabric_loggers.csv_logger import CSVLogger
from fabric_loggers.dvclive_logger import DVCLiveLogger
from fabric_loggers.mlflow_logger import MLflowLogger
from fabric_loggers.tensorboard import TensorBoardLogger
from fabric_loggers.wandb_logger import WandbLogger

__all__ = [
    "CSVLogger",
    "CometLogger",
    "DVCLiveLogger",
    "MLflowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "__version__",
]
