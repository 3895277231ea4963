"""``WandbLogger``: metrics, config and artifacts in a Weights & Biases run (online, or offline files).

Each logger owns its run object (``wandb.init(reinit="create_new")``), so two loggers in one process do
not share W&B's global ``wandb.run``. Offline runs (``offline=True`` or ``WANDB_MODE=offline``) are
written under ``save_dir/wandb/offline-run-*`` and uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fabric_loggers._requires import require
from fabric_loggers._tracker import TrackerLogger


class WandbLogger(TrackerLogger):
    """Log to a W&B run.

    Args:
        project: the W&B project.
        name: the run's display name.
        save_dir: the folder W&B writes its run files into (``save_dir/wandb``).
        offline: write the run locally only (``wandb sync`` uploads it later); also ``WANDB_MODE=offline``.
        id: continue the run with this id (resume) or create it with this id.
        entity: the W&B team or user.
        tags: tags of the run.
        prefix: put before every metric name, joined with ``-``.
        log_checkpoints: hand every checkpoint ``fabric.save`` writes to the run as a ``model`` artifact.
        **init_kwargs: passed to ``wandb.init`` (``group``, ``job_type``, ``notes``, ``settings``, ...).
    """

    _LIVE_ATTRIBUTES = ("_run",)

    def __init__(
        self,
        project: str = "fabric_logs",
        name: str | None = None,
        save_dir: str | os.PathLike[str] = ".",
        offline: bool = False,
        id: str | None = None,  # W&B's own name for it
        entity: str | None = None,
        tags: list[str] | None = None,
        prefix: str = "",
        log_checkpoints: bool = False,
        **init_kwargs: Any,
    ) -> None:
        super().__init__(prefix=prefix, log_checkpoints=log_checkpoints)
        refused = sorted(set(init_kwargs) & {"dir", "reinit", "mode", "resume", "config"})
        if refused:
            raise TypeError(
                f"WandbLogger sets {refused} itself: use save_dir=, offline=, id= (resume) and log_hyperparams()."
            )
        self._project = project
        self._name = name
        self._save_dir = os.fspath(save_dir)
        self._offline = offline
        self._id = id
        self._entity = entity
        self._tags = list(tags) if tags is not None else None
        self._init_kwargs = init_kwargs
        self._run: Any = None

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str | None:
        """The run id (known once the run has started on rank 0, or when given)."""
        return self._id

    @property
    def root_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str | None:
        """The run's folder of files (``.../wandb/run-*`` or ``offline-run-*``) once it has started."""
        return None if self._run is None else os.path.dirname(self._run.dir)

    def _start(self) -> None:
        wandb = require("wandb", "wandb")
        os.makedirs(self._save_dir, exist_ok=True)
        mode = "offline" if self._offline else None  # None: WANDB_MODE or W&B's own default
        self._run = wandb.init(
            project=self._project,
            name=self._name,
            dir=self._save_dir,
            id=self._id,
            entity=self._entity,
            tags=self._tags,
            mode=mode,
            resume="allow" if self._id is not None else None,
            reinit="create_new",
            **self._init_kwargs,
        )
        self._id = self._run.id
        if self._run.resumed:
            self._next_step = max(self._next_step, int(self._run.step or 0))

    def _native(self) -> Any:
        """The ``wandb.Run`` (``logger.experiment.log({...})``, tables, images, alerts)."""
        return self._run

    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def _write_params(self, params: Mapping[str, bool | int | float | str]) -> None:
        self._run.config.update(dict(params), allow_val_change=True)

    def _write_artifact(self, path: str, name: str | None) -> None:
        wandb = require("wandb", "wandb")
        kind = "model" if name == "checkpoints" else "artifact"
        artifact = wandb.Artifact(name=f"{kind}-{self._run.id}", type=kind)
        if os.path.isdir(path):
            artifact.add_dir(path, name=os.path.basename(os.path.normpath(path)))
        else:
            artifact.add_file(path)
        self._run.log_artifact(artifact)

    def _end(self, status: str) -> None:
        self._run.finish(exit_code=0 if status.lower() in ("success", "finished") else 1)
        self._run = None
