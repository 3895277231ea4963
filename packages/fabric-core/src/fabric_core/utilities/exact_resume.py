"""Exact resume: every rank's RNG states and the dataloader position, saved and restored.

A run stopped at step k and resumed from its checkpoint continues bit for bit like the run that
was never stopped (on CPU; GPU kernels may be nondeterministic on their own).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch

from fabric_core.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy
    from fabric_core.wrappers.dataloader import _FabricDataLoader


def capture_rng_states() -> dict[str, Any]:
    """The RNG states of python, NumPy (when installed) and torch (CPU, and CUDA when initialised)."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        legacy_state: Any = np.random.get_state()  # the legacy tuple (a dict only with legacy=False)
        kind, keys, pos, has_gauss, cached = legacy_state
        states["numpy"] = (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached)
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (as returned by ``capture_rng_states``)."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactResume:
    """A checkpoint entry that makes a resumed run identical to an uninterrupted one.

    Put it in the state you save and load: ``{"model": model, ..., "resume": fabric.exact_resume(loader)}``.
    Saving gathers the RNG states of every rank and where each given dataloader stands (epoch and
    batches consumed); loading restores this rank's generators and makes the next iteration of each
    loader continue the interrupted epoch with the same order.
    """

    def __init__(self, strategy: Strategy, dataloaders: tuple[_FabricDataLoader, ...]) -> None:
        from fabric_core.wrappers.dataloader import _FabricDataLoader

        for loader in dataloaders:
            if not isinstance(loader, _FabricDataLoader):
                raise TypeError("exact_resume takes dataloaders returned by fabric.setup_dataloaders.")
        self._strategy = strategy
        self._loaders = dataloaders

    def state_dict(self) -> dict[str, Any]:
        mine = {"rng": capture_rng_states(), "loaders": [loader.position() for loader in self._loaders]}
        return {"world_size": self._strategy.world_size, "ranks": _gather_objects(self._strategy, mine)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["world_size"] != self._strategy.world_size:
            raise CheckpointError(
                f"Exact resume needs the same number of processes: the checkpoint was written by {state['world_size']}, "
                f"this run has {self._strategy.world_size}. Load without the resume entry to continue approximately."
            )
        mine = state["ranks"][self._strategy.global_rank]
        if len(mine["loaders"]) != len(self._loaders):
            raise CheckpointError(
                f"The checkpoint tracked {len(mine['loaders'])} dataloader(s); {len(self._loaders)} were given."
            )
        restore_rng_states(mine["rng"])
        for loader, position in zip(self._loaders, mine["loaders"]):
            loader.resume_from(position)


def _gather_objects(strategy: Strategy, obj: Any) -> list[Any]:
    import torch.distributed as dist

    if strategy.world_size == 1 or not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
