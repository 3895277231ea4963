"""Preparing a user's DataLoader for several processes, without patching DataLoader classes."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from fabric_core.errors import MisconfigurationError
from fabric_core.utilities.attribute_dict import AttributeDict as AttributeDict  # Lightning's import path
from fabric_core.utilities.cpus import suggested_max_num_workers as suggested_max_num_workers
from fabric_core.utilities.samplers import DistributedSamplerWrapper
from fabric_core.utilities.seed import global_seed, seed_workers_enabled, worker_init_function
from fabric_core.utilities.seed import pl_worker_init_function as pl_worker_init_function  # Lightning's path

if TYPE_CHECKING:
    from fabric_core.plugins.strategy import Strategy

# DataLoader attributes that map one-to-one onto constructor arguments.
_LOADER_ARGS = (
    "dataset",
    "num_workers",
    "collate_fn",
    "pin_memory",
    "drop_last",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "generator",
    "prefetch_factor",
    "persistent_workers",
    "pin_memory_device",
    "in_order",
)


def prepare_dataloader(loader: DataLoader, strategy: Strategy, replace_sampler: bool = True) -> DataLoader:
    """Return ``loader`` or a rebuilt copy whose sampler gives this rank its shard of the data."""
    sampler_kwargs = strategy.distributed_sampler_kwargs
    shard = replace_sampler and sampler_kwargs is not None and not isinstance(loader.dataset, IterableDataset)
    if loader.worker_init_fn is None and seed_workers_enabled():
        # As in Lightning: set on the loader itself, also with num_workers=0 (it then never runs).
        loader.worker_init_fn = functools.partial(worker_init_function, rank=strategy.global_rank)
    if not shard:
        return loader
    assert sampler_kwargs is not None
    overrides: dict[str, Any] = _sharded_sampling(loader, sampler_kwargs)
    return _rebuild(loader, overrides)


def _shared_seed() -> int:
    return global_seed()


def _sharded_sampling(loader: DataLoader, kwargs: dict[str, Any]) -> dict[str, Any]:
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        # A custom batch sampler: each rank takes whole batches of it in turn.
        return {
            "batch_sampler": DistributedSamplerWrapper(batch_sampler, **kwargs),
            "sampler": None,
            "batch_size": 1,
            "shuffle": None,
            "drop_last": False,
        }
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        return {}
    if isinstance(sampler, RandomSampler):
        new: Any = DistributedSampler(loader.dataset, shuffle=True, seed=_shared_seed(), **kwargs)
    elif isinstance(sampler, SequentialSampler):
        new = DistributedSampler(loader.dataset, shuffle=False, **kwargs)
    else:
        new = DistributedSamplerWrapper(sampler, seed=_shared_seed(), **kwargs)
    batch_size = loader.batch_size
    return {
        "sampler": new,
        "batch_sampler": None,
        "batch_size": batch_size,
        "shuffle": None,
        "drop_last": loader.drop_last,
    }


def _rebuild(loader: DataLoader, overrides: dict[str, Any]) -> DataLoader:
    """A new instance of ``type(loader)`` with the same arguments except ``overrides``."""
    cls = type(loader)
    values = {name: getattr(loader, name) for name in _LOADER_ARGS if hasattr(loader, name)}
    values["batch_size"] = loader.batch_size
    values["sampler"] = loader.sampler
    values["batch_sampler"] = (
        loader.batch_sampler
        if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler
        else None
    )
    if values["batch_sampler"] is not None:
        values.update(batch_size=1, sampler=None, drop_last=False)
    values.update(overrides)
    if values.get("batch_sampler") is not None:
        values.pop("batch_size", None)
        values.pop("drop_last", None)
        values.pop("sampler", None)
    values.pop("shuffle", None)
    if values.get("num_workers", 0) == 0:
        for name in ("prefetch_factor", "persistent_workers"):
            values.pop(name, None)
    if cls is DataLoader:
        return DataLoader(**values)
    parameters = inspect.signature(cls.__init__).parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    args: dict[str, Any] = {}
    missing: list[str] = []
    for name, param in list(parameters.items())[1:]:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if name in values:
            args[name] = values.pop(name)
        elif hasattr(loader, name):
            args[name] = getattr(loader, name)
        elif param.default is inspect.Parameter.empty:
            missing.append(name)
    if missing:  # Lightning's wording first (scripts match on it), then how to fix it
        raise MisconfigurationError(
            f"Trying to inject custom `Sampler` into the `{cls.__name__}` instance. This would fail as some of the "
            f"`__init__` arguments are not available as instance attributes. The missing attributes are {missing}. "
            f"Fabric cannot rebuild your {cls.__name__} with a distributed sampler: store each argument as an "
            f"attribute of the same name (self.{missing[0]} = {missing[0]}) or pass use_distributed_sampler=False and "
            "give it a DistributedSampler yourself."
        )
    if accepts_kwargs:
        args.update(values)
    elif any(k in values for k in ("sampler", "batch_sampler")) and not {"sampler", "batch_sampler"} & set(args):
        raise MisconfigurationError(
            f"Fabric cannot give your {cls.__name__} a distributed sampler: its __init__ accepts neither `sampler` nor "
            "**kwargs. Pass use_distributed_sampler=False and give it a DistributedSampler yourself."
        )
    return cls(**args)


def has_len(dataloader: object) -> bool:
    """Whether ``len(dataloader)`` works (a length of 0 counts, with a warning: usually a mistake)."""
    length = sized_len(dataloader)
    if length == 0:
        import warnings

        warnings.warn(
            f"`{type(dataloader).__name__}` returned 0 length. Please make sure this was your intention.", stacklevel=2
        )
    return length is not None


def sized_len(dataloader: object) -> int | None:
    """``len(dataloader)``, or ``None`` where it has no length (iterable datasets, generators)."""
    try:
        return len(dataloader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):
        return None


def has_iterable_dataset(dataloader: object) -> bool:
    """Whether ``dataloader`` reads an ``IterableDataset`` (no sampler can shard it)."""
    return isinstance(getattr(dataloader, "dataset", None), IterableDataset)
