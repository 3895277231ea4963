"""The shape of the device mesh a ``ModelParallelStrategy`` builds, checked before any process starts.

Two forms:

- Lightning's two sizes (``data_parallel_size``, ``tensor_parallel_size``): a 2-D mesh with the
  dimensions ``data_parallel`` and ``tensor_parallel``.
- A ``MeshConfig`` (HSDP x TP): a 3-D mesh ``data_parallel_replicate`` x ``data_parallel_shard`` x
  ``tensor_parallel``, plus ``data_parallel`` (the first two flattened) for data loading and
  collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fabric_core.errors import MisconfigurationError

Size = int | Literal["auto"]

TWO_D_NAMES = ("data_parallel", "tensor_parallel")
HSDP_NAMES = ("data_parallel_replicate", "data_parallel_shard", "tensor_parallel")
_SHOWN = 24  # factorizations listed in an error message at most


def factorizations(world_size: int, dims: int) -> list[tuple[int, ...]]:
    """Every ordered tuple of ``dims`` positive integers whose product is ``world_size``."""
    if dims == 1:
        return [(world_size,)]
    found: list[tuple[int, ...]] = []
    for first in range(1, world_size + 1):
        if world_size % first == 0:
            found.extend((first, *rest) for rest in factorizations(world_size // first, dims - 1))
    return found


def _describe(world_size: int, names: tuple[str, ...]) -> str:
    options = factorizations(world_size, len(names))
    listed = ", ".join("(" + ", ".join(map(str, o)) + ")" for o in options[:_SHOWN])
    more = f" and {len(options) - _SHOWN} more" if len(options) > _SHOWN else ""
    return f"valid ({', '.join(names)}) for {world_size} processes: {listed}{more}"


def check_size(name: str, value: object) -> None:
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MisconfigurationError(f"{name} must be a positive int or 'auto', got {value!r}.")


@dataclass(frozen=True)
class MeshConfig:
    """HSDP x tensor parallel: ``replicate`` copies of a model sharded over ``shard`` processes, each
    layer split over ``tensor_parallel`` processes. One size may be ``"auto"`` (world size / the others).

    ``ModelParallelStrategy(parallelize_fn, mesh=MeshConfig(data_parallel_replicate=2, tensor_parallel=2))``
    gives the user's function a mesh whose ``["data_parallel_replicate", "data_parallel_shard"]`` slice
    is what ``fully_shard(..., mesh=...)`` takes for HSDP, and ``["tensor_parallel"]`` what
    ``parallelize_module`` takes.
    """

    data_parallel_replicate: Size = 1
    data_parallel_shard: Size = "auto"
    tensor_parallel: Size = 1

    def __post_init__(self) -> None:
        sizes = self.sizes
        for name, value in zip(HSDP_NAMES, sizes):
            check_size(name, value)
        if sum(s == "auto" for s in sizes) > 1:
            raise MisconfigurationError(f"MeshConfig takes at most one 'auto' size, got {self}.")

    @property
    def sizes(self) -> tuple[Size, Size, Size]:
        return (self.data_parallel_replicate, self.data_parallel_shard, self.tensor_parallel)

    def resolve(self, world_size: int) -> tuple[int, int, int]:
        """The three sizes for ``world_size`` processes, or an error listing the valid shapes."""
        shape = _fill_auto(self.sizes, world_size, HSDP_NAMES)
        return shape[0], shape[1], shape[2]


def _fill_auto(sizes: tuple[Size, ...], world_size: int, names: tuple[str, ...]) -> tuple[int, ...]:
    known = 1
    for size in sizes:
        if size != "auto":
            known *= int(size)
    if "auto" in sizes:
        if world_size % known:
            given = ", ".join(f"{n}={s}" for n, s in zip(names, sizes) if s != "auto")
            raise MisconfigurationError(
                f"{given} does not divide the world size {world_size}; {_describe(world_size, names)}."
            )
        sizes = tuple(world_size // known if s == "auto" else s for s in sizes)
        known = world_size
    if known != world_size:
        given = " x ".join(f"{n}={s}" for n, s in zip(names, sizes))
        raise MisconfigurationError(
            f"The mesh {given} has {known} positions but the job runs {world_size} processes; "
            f"{_describe(world_size, names)}."
        )
    return tuple(int(s) for s in sizes)


def resolve_two_d(
    data_parallel_size: Size, tensor_parallel_size: Size, num_nodes: int, num_processes: int, world_size: int
) -> tuple[int, int]:
    """Lightning's sizes: both ``"auto"`` means one data-parallel replica per node and tensor
    parallel within the node; one ``"auto"`` is filled in from the world size."""
    check_size("data_parallel_size", data_parallel_size)
    check_size("tensor_parallel_size", tensor_parallel_size)
    if data_parallel_size == "auto" and tensor_parallel_size == "auto":
        data_parallel_size, tensor_parallel_size = num_nodes, num_processes
    shape = _fill_auto((data_parallel_size, tensor_parallel_size), world_size, TWO_D_NAMES)
    return shape[0], shape[1]
