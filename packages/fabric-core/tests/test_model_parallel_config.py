"""ModelParallelStrategy without processes: arguments, mesh shapes refused before launch, the name,
and the gradient norm in one process."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_core.strategies import MeshConfig, ModelParallelStrategy
from fabric_core.strategies.mesh_config import factorizations
from fabric_core.strategies.mesh_gradients import clip_by_norm


def identity(model: torch.nn.Module, mesh: object) -> torch.nn.Module:
    return model


def test_signature_follows_lightning() -> None:
    params = list(inspect.signature(ModelParallelStrategy).parameters)
    assert params[:6] == [
        "parallelize_fn",
        "data_parallel_size",
        "tensor_parallel_size",
        "save_distributed_checkpoint",
        "process_group_backend",
        "timeout",
    ]
    strategy = ModelParallelStrategy(identity)
    assert strategy.name == "model_parallel" and strategy.is_distributed


def test_name_alone_asks_for_the_instance() -> None:
    with pytest.raises(MisconfigurationError, match=r"ModelParallelStrategy\(parallelize_fn="):
        Fabric(accelerator="cpu", strategy="model_parallel", devices=2)


@pytest.mark.parametrize(
    ("kwargs", "devices", "shape", "names"),
    [
        ({}, 4, (1, 4), ("data_parallel", "tensor_parallel")),  # Lightning: one replica per node, TP in the node
        ({"data_parallel_size": 2}, 4, (2, 2), ("data_parallel", "tensor_parallel")),
        ({"tensor_parallel_size": 1}, 4, (4, 1), ("data_parallel", "tensor_parallel")),
        ({"data_parallel_size": 2, "tensor_parallel_size": 1}, 2, (2, 1), ("data_parallel", "tensor_parallel")),
        (
            {"mesh": MeshConfig(data_parallel_replicate=2, tensor_parallel=2)},
            4,
            (2, 1, 2),
            ("data_parallel_replicate", "data_parallel_shard", "tensor_parallel"),
        ),
        ({"mesh": MeshConfig(data_parallel_replicate=2)}, 4, (2, 2, 1), None),
    ],
)
def test_mesh_shape_resolved_at_construction(kwargs: dict, devices: int, shape: tuple, names: tuple | None) -> None:
    fabric = Fabric(accelerator="cpu", strategy=ModelParallelStrategy(identity, **kwargs), devices=devices)
    assert fabric.strategy.mesh_shape == shape
    if names:
        assert fabric.strategy.mesh_dim_names == names
    with pytest.raises(RuntimeError, match="launch"):
        _ = fabric.strategy.device_mesh  # built when the processes start


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensor_parallel_size": 3}, r"does not divide the world size 4.*\(1, 4\), \(2, 2\), \(4, 1\)"),
        ({"data_parallel_size": 2, "tensor_parallel_size": 4}, r"8 positions but the job runs 4 processes.*\(2, 2\)"),
        (
            {"mesh": MeshConfig(data_parallel_replicate=2, data_parallel_shard=2, tensor_parallel=2)},
            r"8 positions.*\(data_parallel_replicate, data_parallel_shard, tensor_parallel\).*\(2, 1, 2\)",
        ),
        ({"mesh": MeshConfig(data_parallel_replicate=3)}, r"does not divide"),
    ],
)
def test_impossible_mesh_refused_before_any_process_starts(kwargs: dict, message: str) -> None:
    with pytest.raises(MisconfigurationError, match=message):
        Fabric(accelerator="cpu", strategy=ModelParallelStrategy(identity, **kwargs), devices=4)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelParallelStrategy("not a function"), "parallelize_fn must be a function"),  # type: ignore[arg-type]
        (lambda: ModelParallelStrategy(identity, tensor_parallel_size=0), "positive int or 'auto'"),
        (lambda: ModelParallelStrategy(identity, data_parallel_size="2"), "positive int or 'auto'"),  # type: ignore[arg-type]
        (lambda: ModelParallelStrategy(identity, data_parallel_size=2, mesh=MeshConfig()), "not both"),
        (lambda: ModelParallelStrategy(identity, mesh=(2, 2)), "MeshConfig"),  # type: ignore[arg-type]
        (lambda: MeshConfig(data_parallel_replicate="auto", data_parallel_shard="auto"), "at most one 'auto'"),
        (lambda: MeshConfig(tensor_parallel=-1), "positive int"),
    ],
)
def test_invalid_arguments(make: object, message: str) -> None:
    with pytest.raises(MisconfigurationError, match=message):
        make()  # type: ignore[operator]


def test_factorizations() -> None:
    assert factorizations(4, 2) == [(1, 4), (2, 2), (4, 1)]
    assert len(factorizations(8, 3)) == 10
    assert all(math.prod(f) == 12 for f in factorizations(12, 3))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_matches_torch_for_plain_tensors(norm_type: float) -> None:
    torch.manual_seed(0)
    grads = [torch.randn(5, 3), torch.randn(7)]
    expected = [g.clone() for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in expected]
    for p, g in zip(params, expected):
        p.grad = g
    expected_norm = torch.nn.utils.clip_grad_norm_(params, 0.5, norm_type)
    norm = clip_by_norm(grads, 0.5, norm_type, error_if_nonfinite=True)
    assert norm.item() == pytest.approx(expected_norm.item(), rel=1e-6)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_clip_refuses_nonfinite_norm() -> None:
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_by_norm([torch.tensor([float("nan")])], 1.0, 2.0, error_if_nonfinite=True)
