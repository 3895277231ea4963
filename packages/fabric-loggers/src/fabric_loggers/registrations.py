"""The ``fabric_core.loggers`` entry points: ``Fabric(loggers=["tensorboard", "mlflow"])`` builds these.

Each builds the logger with its defaults; pass an instance to ``Fabric(loggers=...)`` to choose settings.
"""

from __future__ import annotations

from fabric_core.plugins.logger import Logger

#: where the file loggers built by name keep their runs: ``logs/tensorboard/version_N``, ``logs/csv/version_N``
DEFAULT_ROOT_DIR = "logs"


def tensorboard() -> Logger:
    from fabric_loggers.tensorboard import TensorBoardLogger

    return TensorBoardLogger(DEFAULT_ROOT_DIR, name="tensorboard")


def csv() -> Logger:
    from fabric_loggers.csv_logger import CSVLogger

    return CSVLogger(DEFAULT_ROOT_DIR, name="csv")


def mlflow() -> Logger:
    from fabric_loggers.mlflow_logger import MLflowLogger

    return MLflowLogger()


def wandb() -> Logger:
    from fabric_loggers.wandb_logger import WandbLogger

    return WandbLogger()


def comet() -> Logger:
    from fabric_loggers.comet_logger import CometLogger

    return CometLogger()


def dvclive() -> Logger:
    from fabric_loggers.dvclive_logger import DVCLiveLogger

    return DVCLiveLogger()
