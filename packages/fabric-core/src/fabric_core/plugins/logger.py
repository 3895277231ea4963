"""The Logger interface: where ``fabric.log`` sends metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any


class Logger(ABC):
    """An experiment tracker.

    Contract for backend authors:

    - Fabric calls ``log_metrics`` with plain Python numbers (tensors already detached and
      converted) on every rank; a logger that writes files writes them on global rank 0 only.
    - ``step`` may be ``None`` (the user gave none): the logger counts its own steps, as
      Lightning's loggers do.
    - ``finalize`` flushes and closes; after it the files on disk are complete.
    - ``experiment`` is the tracker's native run object on global rank 0; elsewhere a no-op object
      (``NoOpExperiment``) whose every attribute and call does nothing, so user code needs no rank checks.
    - ``log_checkpoint(path)`` is called by ``fabric.save`` on loggers that asked for it
      (``wants_checkpoints`` true); the default does nothing.
    """

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment name (a folder under ``root_dir`` for file loggers)."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The run's version within the experiment."""

    @property
    def root_dir(self) -> str | None:
        """The folder that holds all experiments of this logger, if it writes files."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The folder this run writes to, if it writes files."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record scalar ``metrics`` at ``step`` (``None``: the step after the last one this logger saw)."""

    @abstractmethod
    def log_hyperparams(self, params: Mapping[str, Any] | Any, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters (a dict or an ``argparse.Namespace``)."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the computational graph of ``model`` (optional)."""

    def save(self) -> None:
        """Flush what has been recorded so far."""

    def set_global_rank(self, rank: int) -> None:
        """Fabric tells the logger this process's global rank once the job is set up.

        File loggers write only where ``rank == 0``; the default ignores it.
        """

    def finalize(self, status: str) -> None:
        """Flush and close at the end of the run; ``status`` is "success" or "failed"."""
        self.save()

    @property
    def wants_checkpoints(self) -> bool:
        """Whether ``fabric.save`` should hand this logger each checkpoint it writes (``log_checkpoint``)."""
        return False

    def log_checkpoint(self, path: str) -> None:
        """Upload or record the checkpoint ``fabric.save`` just wrote at ``path`` (trackers with artifacts)."""


class NoOpExperiment:
    """What ``logger.experiment`` is on ranks that do not write: every attribute, call and item is a no-op.

    ``fabric.logger.experiment.add_image(...)`` then runs unchanged on every rank (Lightning's
    ``rank_zero_experiment`` idea).
    """

    def __getattr__(self, name: str) -> NoOpExperiment:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> NoOpExperiment:
        return self

    def __getitem__(self, key: Any) -> NoOpExperiment:
        return self

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "NoOpExperiment()"
