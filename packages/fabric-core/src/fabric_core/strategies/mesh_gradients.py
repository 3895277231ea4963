"""The total gradient norm of a model whose parameters are spread over a device mesh, in one collective.

``torch.nn.utils.clip_grad_norm_`` stacks per-parameter norms into one tensor, which fails when a
model mixes DTensors of different meshes or placements with plain parameters, and reducing a 2-D
DTensor norm costs one all-reduce per mesh dimension. Here each rank sums ``|local shard|^p``
divided by the number of ranks that hold an identical copy of that shard, and one all-reduce over
all processes gives ``sum |g|^p`` of the whole model. Gradients still holding pending partial sums
(``Partial`` placements, as sequence-parallel norms leave them) are reduced first.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def _copies(grad: Tensor, world_size: int) -> int:
    """How many ranks hold the same values as this rank's piece of ``grad``."""
    from torch.distributed.tensor import DTensor

    if not isinstance(grad, DTensor):
        return world_size  # a plain (replicated) parameter: every rank has all of it
    shards = 1
    for dim, placement in enumerate(grad.placements):
        if not placement.is_replicate():  # Shard, _StridedShard, ... (partial sums were reduced before)
            shards *= grad.device_mesh.size(dim)
    return world_size // shards


def _reduced(grad: Tensor) -> Tensor:
    from torch.distributed.tensor import Replicate

    placements = [Replicate() if p.is_partial() else p for p in grad.placements]  # type: ignore[attr-defined]
    return grad.redistribute(grad.device_mesh, placements)  # type: ignore[attr-defined]


def total_norm(grads: list[Tensor], norm_type: float, device: torch.device) -> Tensor:
    """The ``norm_type``-norm of all ``grads`` together, the same plain tensor on every rank.

    Every rank must call this with the gradients of the same model (the collective is global).
    """
    from torch.distributed.tensor import DTensor

    distributed = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if distributed else 1
    groups: dict[int, list[Tensor]] = {}
    for grad in grads:
        if isinstance(grad, DTensor) and any(p.is_partial() for p in grad.placements):
            grad = _reduced(grad)  # pending sums (sequence-parallel norms): only their sum has a norm
        local = grad.to_local() if isinstance(grad, DTensor) else grad
        groups.setdefault(_copies(grad, world_size), []).append(local.detach())
    is_inf = math.isinf(norm_type)
    acc = torch.zeros((), dtype=torch.float64, device=device)
    for copies, members in groups.items():
        norm = torch.nn.utils.get_total_norm(members, norm_type=norm_type).to(device, torch.float64)
        acc = torch.maximum(acc, norm) if is_inf else acc + norm**norm_type / copies
    if distributed:
        dist.all_reduce(acc, op=dist.ReduceOp.MAX if is_inf else dist.ReduceOp.SUM)
    result = acc if is_inf else acc ** (1.0 / norm_type)
    dtype = grads[0].dtype if grads else torch.float32
    return result.to(dtype)


def clip_by_norm(grads: list[Tensor], max_norm: float, norm_type: float, error_if_nonfinite: bool) -> Tensor:
    """Scale ``grads`` in place so their total norm is at most ``max_norm``; returns the norm before."""
    device = grads[0].device if grads else torch.device("cpu")
    norm = total_norm(grads, norm_type, device)
    if error_if_nonfinite and not torch.isfinite(norm):
        raise RuntimeError(
            f"The total norm of order {norm_type} of the gradients is non-finite ({norm.item()}); "
            "pass error_if_nonfinite=False to clip anyway."
        )
    coefficient = float(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    if coefficient < 1.0:
        with torch.no_grad():
            for grad in grads:
                grad.mul_(coefficient)
    return norm
