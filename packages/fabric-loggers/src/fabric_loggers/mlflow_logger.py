"""``MLflowLogger``: metrics, parameters, tags and artifacts in an MLflow run, through ``MlflowClient``.

The client API (not ``mlflow.start_run``'s process-global active run) keeps two loggers, or two Fabric
objects, in one process apart. Each ``log_metrics`` call is one ``log_batch`` request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from fabric_loggers._requires import require
from fabric_loggers._tracker import TrackerLogger

_STATUSES = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_MAX_PARAM_LENGTH = 6000  # MLflow refuses longer parameter values
_MAX_QUEUED = 256  # asynchronous requests kept waiting before the logger waits for them (bounds memory)


def default_tracking_uri(save_dir: str) -> str:
    """``sqlite:///<save_dir>/mlflow.db``: MLflow's recommended local store (the file store is deprecated)."""
    return "sqlite:///" + os.path.abspath(os.path.join(os.path.expanduser(save_dir), "mlflow.db"))


class MLflowLogger(TrackerLogger):
    """Log to an MLflow run; open it with ``mlflow ui --backend-store-uri <tracking_uri>``.

    Args:
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's display name.
        tracking_uri: any MLflow tracking URI (``http://...``, ``databricks``, ``file:./mlruns``,
            ``sqlite:///path.db``). ``None``: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<save_dir>/mlflow.db``.
        save_dir: the local folder for the default store and its artifacts.
        tags: tags set on the run when it is created.
        run_id: continue this existing run (resume); metrics then go on from where it stopped.
        artifact_location: where a newly created experiment keeps artifacts (default: ``<save_dir>/artifacts``
            for the local store, the server's choice otherwise).
        prefix: put before every metric name, joined with ``-``.
        log_checkpoints: hand every checkpoint ``fabric.save`` writes to the run as an artifact.
        synchronous: wait for each request (``True``) or let MLflow queue them (``False``; MLflow's default).
    """

    def __init__(
        self,
        experiment_name: str = "fabric_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        save_dir: str | os.PathLike[str] = "./mlruns",
        tags: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
        prefix: str = "",
        log_checkpoints: bool = False,
        synchronous: bool | None = None,
    ) -> None:
        super().__init__(prefix=prefix, log_checkpoints=log_checkpoints)
        self._experiment_name = experiment_name
        self._run_name = run_name
        self._save_dir = os.fspath(save_dir)
        self._tracking_uri = (
            tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(self._save_dir)
        )
        self._local = tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ
        self._tags = {str(key): str(value) for key, value in (tags or {}).items()}
        self._run_id = run_id
        self._artifact_location = artifact_location
        self._synchronous = synchronous
        self._experiment_id: str | None = None
        self._client: Any = None
        self._queued: list[Any] = []  # MLflow's RunOperations of asynchronous requests not yet waited for

    # ----------------------------------------------------------------- names
    @property
    def name(self) -> str:
        return self._experiment_name

    @property
    def version(self) -> str | None:
        """The run id (known once the run has started on rank 0, or when given to resume)."""
        return self._run_id

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        return self._experiment_id

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def root_dir(self) -> str | None:
        return self._save_dir if self._local else None

    # ------------------------------------------------------------------ runs
    def _start(self) -> None:
        mlflow = require("mlflow", "mlflow")
        if self._local:
            os.makedirs(os.path.expanduser(self._save_dir), exist_ok=True)
        self._client = mlflow.MlflowClient(tracking_uri=self._tracking_uri)
        if self._run_id is not None:
            run = self._client.get_run(self._run_id)  # fails clearly when the id does not exist
            self._experiment_id = run.info.experiment_id
            self._client.update_run(self._run_id, status="RUNNING")
            history = [self._client.get_metric_history(self._run_id, key) for key in run.data.metrics]
            last = max((metric.step for metrics in history for metric in metrics), default=-1)
            self._next_step = max(self._next_step, last + 1)
            return
        experiment = self._client.get_experiment_by_name(self._experiment_name)
        if experiment is None:
            location = self._artifact_location
            if location is None and self._local:
                location = os.path.abspath(os.path.join(os.path.expanduser(self._save_dir), "artifacts"))
            self._experiment_id = self._client.create_experiment(self._experiment_name, artifact_location=location)
        else:
            self._experiment_id = experiment.experiment_id
        run = self._client.create_run(self._experiment_id, tags=self._tags, run_name=self._run_name)
        self._run_id = run.info.run_id

    def _native(self) -> Any:
        """The ``MlflowClient`` (pass ``logger.run_id`` to its methods), as Lightning's MLFlowLogger returns."""
        return self._client

    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key=name, value=float(value), timestamp=now, step=step) for name, value in metrics.items()]
        self._queue(self._client.log_batch(self._run_id, metrics=batch, synchronous=self._synchronous))

    def _write_params(self, params: Mapping[str, bool | int | float | str]) -> None:
        from mlflow.entities import Param

        batch = [Param(name, str(value)[:_MAX_PARAM_LENGTH]) for name, value in params.items()]
        for start in range(0, len(batch), 100):  # MLflow takes at most 100 parameters per request
            operation = self._client.log_batch(
                self._run_id, params=batch[start : start + 100], synchronous=self._synchronous
            )
            self._queue(operation)

    def _queue(self, operation: Any) -> None:
        """Keep an asynchronous request's handle (``None`` for a synchronous one) to wait for it later."""
        if operation is not None:
            self._queued.append(operation)
            if len(self._queued) >= _MAX_QUEUED:
                self._wait_queued()

    def _wait_queued(self) -> None:
        """Wait for this logger's own asynchronous requests (``mlflow.flush_async_logging()`` would open the
        process-wide default store, a ``mlflow.db`` in the working directory, when none was set)."""
        queued, self._queued = self._queued, []
        for operation in queued:
            operation.wait()

    def _write_artifact(self, path: str, name: str | None) -> None:
        if os.path.isdir(path):
            target = f"{name}/{os.path.basename(os.path.normpath(path))}" if name else os.path.basename(path)
            self._client.log_artifacts(self._run_id, path, artifact_path=target)
        else:
            self._client.log_artifact(self._run_id, path, artifact_path=name)

    def _end(self, status: str) -> None:
        self._wait_queued()
        self._client.set_terminated(self._run_id, status=_STATUSES.get(status.lower(), status.upper()))

    def save(self) -> None:
        """Wait until MLflow has sent every queued request (asynchronous logging)."""
        if self.is_writer and self._started:
            self._wait_queued()

    def log_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (rank 0 only)."""
        if not self.is_writer:
            return
        self._ensure_started()
        for key, value in tags.items():
            self._client.set_tag(self._run_id, str(key), str(value))
