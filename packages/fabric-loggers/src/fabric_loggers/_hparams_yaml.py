"""``hparams.yaml``: the run's hyperparameters, nested as given, rewritten whole on every change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from fabric_loggers._atomic import replace_atomically

HPARAMS_FILE = "hparams.yaml"


def write_hparams_yaml(path: str, params: Mapping[str, Any]) -> None:
    """Write ``params`` (already made YAML-safe) so that a crash never leaves half a file."""
    import yaml  # imported here: ``import fabric_loggers`` must not pay for it

    def write(handle: IO[str]) -> None:
        yaml.safe_dump(dict(params), handle, sort_keys=False, default_flow_style=False, allow_unicode=True)

    replace_atomically(path, write)


def read_hparams_yaml(path: str) -> dict[str, Any]:
    """The hyperparameters in ``path`` (safe loading: no Python objects are built)."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    return dict(loaded or {})
