"""Loading DeepSpeed checkpoints without running code from the files (``fabric.load(weights_only=True)``).

DeepSpeed's own loader calls ``torch.load(..., weights_only=False)``, which unpickles anything. For
the duration of one ``fabric.load`` the engine's checkpoint engine is replaced by one whose ``load``
uses torch's weights-only unpickler, with the few plain DeepSpeed data classes its checkpoints hold
allowed by name. A file that needs anything else is refused with a ``CheckpointError``.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fabric_core.plugins.checkpointing import CheckpointError

# Data-only classes found in DeepSpeed 0.19 checkpoints (optimizer shards): a loss-scaler record, the
# ZeRO stage enum and the fragment-address named tuple.
_ALLOWED = (
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)


def allowed_globals() -> list[Any]:
    """The DeepSpeed classes weights-only loading accepts (those this DeepSpeed version has)."""
    found = []
    for module_name, attribute in _ALLOWED:
        try:
            found.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError):
            continue
    return found


class _WeightsOnlyLoads:
    """Stands in for the engine's checkpoint engine: same object, but ``load`` is weights-only."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def load(self, path: str, map_location: Any = None) -> Any:
        import torch

        try:
            with torch.serialization.safe_globals(allowed_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            detail = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), first)
            raise CheckpointError(
                f"Checkpoint file {path!r} holds objects that safe loading refuses (loading them would run code from the "
                f"file): {detail} Pass weights_only=False to fabric.load only if you trust the checkpoint."
            ) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def safe_checkpoint_engine(engine: Any, weights_only: bool, path: Path) -> Generator[None, None, None]:
    """While open, ``engine`` reads checkpoint files weights-only (unless ``weights_only`` is ``False``)."""
    if not weights_only:
        yield
        return
    inner = engine.checkpoint_engine
    engine.checkpoint_engine = _WeightsOnlyLoads(inner)
    try:
        yield
    finally:
        engine.checkpoint_engine = inner
