"""``CSVLogger``: metrics to ``metrics.csv`` and hyperparameters to ``hparams.yaml``, no extra dependency."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from fabric_loggers import _remote
from fabric_loggers._csv_file import MetricsCSV
from fabric_loggers._hparams_yaml import HPARAMS_FILE, write_hparams_yaml
from fabric_loggers._params import params_to_dict, yaml_value
from fabric_loggers._run_logger import RunLogger, Sink

METRICS_FILE = "metrics.csv"


class _CSVSink(Sink):
    """The open state of one run's CSV files in one process; ``CSVLogger.experiment`` on rank 0."""

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        self.log_dir = log_dir
        if _remote.is_url(log_dir):
            self.metrics_file_path = _remote.join(log_dir, METRICS_FILE)
            self._file: MetricsCSV | _remote.RemoteMetricsCSV = _remote.RemoteMetricsCSV(self.metrics_file_path)
        else:
            self.metrics_file_path = os.path.join(log_dir, METRICS_FILE)
            self._file = MetricsCSV(self.metrics_file_path)

    @property
    def metrics(self) -> list[dict[str, int | float]]:
        """Rows logged but not yet written (each with its ``step``)."""
        return self._file.metrics

    def log_metrics(self, metrics: Mapping[str, int | float], step: int | None = None) -> None:
        """Add a row directly (no prefix, no flush schedule); without ``step`` it follows the pending rows."""
        self.write_metrics(metrics, len(self._file.metrics) if step is None else step)

    def save(self) -> None:
        """Write the pending rows to ``metrics.csv``."""
        self.flush()

    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None:
        self._file.add(metrics, step)

    def _flush(self) -> None:
        self._file.flush()

    def _close(self, status: str | None) -> None:
        self._file.flush()


def _move_aside(path: str) -> str | None:
    """Rename an existing ``metrics.csv`` to the first free ``metrics.previous-N.csv``; return the new path."""
    if _remote.is_url(path):
        fs = _remote.filesystem(path)
        exists, rename = fs.exists, fs.mv
    else:
        exists, rename = os.path.exists, os.replace
    if not exists(path):
        return None
    stem, extension = path[: -len(".csv")], ".csv"
    number = 1
    while True:
        target = f"{stem}.previous-{number}{extension}"
        if not exists(target):
            rename(path, target)
            return target
        number += 1


class CSVLogger(RunLogger):
    """Log metrics to ``root_dir/name/version_N/metrics.csv`` (a ``step`` column, then one per metric).

    Args:
        root_dir: the folder that holds all experiments.
        name: the experiment folder under ``root_dir`` (``None`` or ``""``: none).
        version: an int (``version_<int>``), a folder name, or ``None`` for the next free ``version_N``. When
            that folder already holds a ``metrics.csv``, this run starts a new one (with a warning) and the
            earlier file is renamed ``metrics.previous-1.csv`` (Lightning deletes it).
        prefix: put before every metric name, joined with ``-`` (``train-loss``).
        flush_logs_every_n_steps: write buffered rows after this many distinct steps (``None``: only on
            ``save``/``finalize``/exit). A crash loses at most the rows since the last flush.
        flush_logs_every_n_seconds: also write them when this many seconds have passed since the last flush
            (checked when a metric is logged).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        name: str | None = "fabric_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int | None = 100,
        flush_logs_every_n_seconds: float | None = None,
    ) -> None:
        super().__init__(root_dir, name, version, prefix, flush_logs_every_n_steps, flush_logs_every_n_seconds)
        self._hparams: dict[str, Any] = {}
        self._checked_existing = False  # set once this logger has looked for an earlier run's metrics.csv

    def _create_sink(self, log_dir: str) -> _CSVSink:
        sink = _CSVSink(log_dir)
        if not self._checked_existing:
            self._checked_existing = True
            kept = _move_aside(sink.metrics_file_path)
            if kept is not None:
                warnings.warn(
                    f"Experiment logs directory {log_dir} exists and is not empty: its metrics.csv will be "
                    f"overwritten by this run. The earlier file was kept as {kept.rsplit('/', 1)[-1]}.",
                    UserWarning,
                    stacklevel=4,
                )
        return sink

    @property
    def experiment(self) -> _CSVSink | Any:
        """The metrics writer on rank 0 (``metrics``, ``metrics_file_path``, ``log_metrics``, ``save``)."""
        return super().experiment

    def log_hyperparams(self, params: Mapping[str, Any] | Any, metrics: Mapping[str, Any] | None = None) -> None:
        """Merge ``params`` (dict, nested dicts, argparse.Namespace, dataclass) into ``hparams.yaml`` at once.

        ``metrics`` (name -> number), as ``TensorBoardLogger`` takes them, become a row at step 0.
        """
        update = {key: yaml_value(value) for key, value in params_to_dict(params).items()}
        if not self.is_writer:
            return
        self._hparams.update(update)
        log_dir = self.log_dir
        if _remote.is_url(log_dir):
            import yaml

            text = yaml.safe_dump(self._hparams, sort_keys=False, default_flow_style=False, allow_unicode=True)
            _remote.write_text(_remote.join(log_dir, HPARAMS_FILE), text)
        else:
            os.makedirs(log_dir, exist_ok=True)
            write_hparams_yaml(os.path.join(log_dir, HPARAMS_FILE), self._hparams)
        if metrics:
            self.log_metrics(metrics, step=0)
