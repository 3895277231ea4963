"""Gradient norms over parameters that live on different device meshes (DTensors) or on none.

``torch.nn.utils.clip_grad_norm_`` stacks the per-parameter norms into one tensor, which fails when a
model mixes DTensors of different meshes or placements (tensor-parallel layers, FSDP-sharded layers,
plain parameters left alone by the plan). Here the gradients are grouped by their layout, each
group's norm is reduced to a plain tensor over its mesh, and the groups are combined.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def _layout(grad: Tensor) -> tuple[object, ...]:
    from torch.distributed.tensor import DTensor

    if isinstance(grad, DTensor):
        return (grad.device_mesh, tuple(grad.placements), grad.device)
    return (None, (), grad.device)


def total_norm(grads: Iterable[Tensor], norm_type: float, device: torch.device) -> Tensor:
    """The ``norm_type``-norm of all ``grads`` together, the same plain tensor on every rank.

    Every rank must pass gradients of the same layouts in the same order (the same model).
    """
    from torch.distributed.tensor import DTensor

    groups: dict[tuple[object, ...], list[Tensor]] = {}
    for grad in grads:
        groups.setdefault(_layout(grad), []).append(grad)
    if not groups:
        return torch.zeros((), device=device)
    norms = []
    for members in groups.values():
        norm = torch.nn.utils.get_total_norm(members, norm_type=norm_type, foreach=None)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        norms.append(norm.to(device))
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


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
