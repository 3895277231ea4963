"""``CometLogger``: metrics, parameters and models in a Comet experiment, online or offline.

Offline experiments (``offline=True``) are written as one ``<experiment key>.zip`` archive per run under
``save_dir`` when the run ends, and uploaded later with ``comet upload <archive>``. Comet's automatic
logging (code, graph, argparse, stdout, environment, git) is off: the logger records what you log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fabric_loggers._requires import require
from fabric_loggers._tracker import TrackerLogger

#: Comet's automatic logging, switched off so that a run holds what the user logged and nothing else
_QUIET = {
    "log_code": False,
    "log_graph": False,
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "parse_args": False,
    "auto_output_logging": False,
    "log_env_details": False,
    "log_git_metadata": False,
    "log_git_patch": False,
    "log_env_gpu": False,
    "log_env_host": False,
    "log_env_cpu": False,
    "display_summary_level": 0,
}


class CometLogger(TrackerLogger):
    """Log to a Comet experiment.

    Args:
        project_name: the Comet project.
        experiment_name: the experiment's display name.
        offline: write an archive under ``save_dir`` instead of sending to Comet (``comet upload`` later).
        save_dir: where offline archives go.
        experiment_key: continue this existing experiment (resume).
        workspace: the Comet workspace.
        api_key: the API key for online use (else ``COMET_API_KEY`` or Comet's config file).
        prefix: put before every metric name, joined with ``-``.
        log_checkpoints: hand every checkpoint ``fabric.save`` writes to the experiment as a model.
        **experiment_kwargs: passed to Comet's experiment (for example ``auto_output_logging="simple"``).
    """

    _LIVE_ATTRIBUTES = ("_experiment",)

    def __init__(
        self,
        project_name: str = "fabric_logs",
        experiment_name: str | None = None,
        offline: bool = False,
        save_dir: str | os.PathLike[str] = "./comet",
        experiment_key: str | None = None,
        workspace: str | None = None,
        api_key: str | None = None,
        prefix: str = "",
        log_checkpoints: bool = False,
        **experiment_kwargs: Any,
    ) -> None:
        super().__init__(prefix=prefix, log_checkpoints=log_checkpoints)
        self._project_name = project_name
        self._experiment_name = experiment_name
        self._offline = offline
        self._save_dir = os.fspath(save_dir)
        self._experiment_key = experiment_key
        self._workspace = workspace
        self._api_key = api_key
        self._experiment_kwargs = {**_QUIET, **experiment_kwargs}
        self._experiment: Any = None

    @property
    def name(self) -> str:
        return self._project_name

    @property
    def version(self) -> str | None:
        """The experiment key (known once the run has started on rank 0, or when given)."""
        return self._experiment_key

    @property
    def root_dir(self) -> str | None:
        return self._save_dir if self._offline else None

    def _start(self) -> None:
        comet_ml = require("comet_ml", "comet")
        common = {"project_name": self._project_name, "workspace": self._workspace, **self._experiment_kwargs}
        if self._offline:
            os.makedirs(self._save_dir, exist_ok=True)
            common["offline_directory"] = self._save_dir
            if self._experiment_key is not None:
                self._experiment = comet_ml.ExistingOfflineExperiment(
                    previous_experiment=self._experiment_key, **common
                )
            else:
                self._experiment = comet_ml.OfflineExperiment(**common)
        elif self._experiment_key is not None:
            self._experiment = comet_ml.ExistingExperiment(
                api_key=self._api_key, previous_experiment=self._experiment_key, **common
            )
        else:
            self._experiment = comet_ml.Experiment(api_key=self._api_key, **common)
        if self._experiment_name is not None:
            self._experiment.set_name(self._experiment_name)
        self._experiment_key = self._experiment.get_key()

    def _native(self) -> Any:
        """Comet's ``Experiment`` (or ``OfflineExperiment``): images, confusion matrices, assets, ..."""
        return self._experiment

    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None:
        self._experiment.log_metrics(dict(metrics), step=step)

    def _write_params(self, params: Mapping[str, bool | int | float | str]) -> None:
        self._experiment.log_parameters(dict(params))

    def _write_artifact(self, path: str, name: str | None) -> None:
        if name == "checkpoints":
            self._experiment.log_model(name, path)
        elif os.path.isdir(path):
            self._experiment.log_asset_folder(path, log_file_name=True)
        else:
            self._experiment.log_asset(path, file_name=os.path.basename(path))

    def _end(self, status: str) -> None:
        self._experiment.log_other("status", status)
        self._experiment.end()
        self._experiment = None
