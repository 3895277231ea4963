"""Fixtures for the fabric-loggers tests."""

from __future__ import annotations

import pytest

# Upstream deprecation notices that our tests trigger through the libraries' own code, each filtered by its exact
# message (and category), nowhere else. A user's script does not show them: Python's default filters show a
# DeprecationWarning only when raised from __main__, and these come from inside the libraries.
_UPSTREAM_NOTICES = (
    # torch 2.13 deprecates torch.jit.trace (and trace_method); TensorBoardLogger.log_graph needs it through
    # torch.utils.tensorboard's SummaryWriter.add_graph, the only way to build a TensorBoard graph from a module.
    r"ignore:`torch\.jit\.trace(_method)?` is deprecated\. Please switch to `torch\.compile` or `torch\.export`\.:DeprecationWarning",
    # DVC (dvc/repo/trie.py, dvc/repo/graph.py) reads pygtrie's _NoneStep.value, which pygtrie deprecates; raised
    # when DVCLive adds an artifact or saves an experiment inside Git (the trackers session).
    r"ignore:_NoneStep\.value will soon raise AttributeError:DeprecationWarning",
    # MLflow's SQL store configures its mappers with SQLAlchemy's deprecated ``noload`` strategy (an
    # SADeprecationWarning, a DeprecationWarning), once per process that opens a sqlite:// store (trackers session).
    r"ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    for notice in _UPSTREAM_NOTICES:
        config.addinivalue_line("filterwarnings", notice)


@pytest.fixture(autouse=True)
def _single_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide the rank themselves: a RANK exported by the shell running pytest must not leak in."""
    for variable in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
