"""Fixtures for the fabric-loggers tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide the rank themselves: a RANK exported by the shell running pytest must not leak in."""
    for variable in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
