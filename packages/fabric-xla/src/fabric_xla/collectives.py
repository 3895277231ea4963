"""Collectives between XLA replicas (processes or device threads), built on ``torch_xla.core.xla_model``."""

from __future__ import annotations

import pickle
from typing import Any

import torch
from torch import Tensor

_XM_OPS = {"sum": "sum", "mean": "sum", "max": "max", "min": "min"}


def _xm() -> Any:
    import torch_xla.core.xla_model as xm

    return xm


def all_reduce(tensor: Tensor, device: torch.device, world_size: int, reduce_op: str) -> Tensor:
    """Reduce ``tensor`` over all replicas; ``mean`` divides the sum by the number of replicas."""
    if reduce_op not in _XM_OPS:
        raise ValueError(f"reduce_op={reduce_op!r} is not supported; choose one of {', '.join(_XM_OPS)}.")
    tensor = tensor.to(device)
    reduced = _xm().all_reduce(_XM_OPS[reduce_op], tensor)
    if reduce_op == "mean":
        reduced = reduced / world_size
    return reduced


def all_gather(tensor: Tensor, device: torch.device, sync_grads: bool = False) -> Tensor:
    """Stack ``tensor`` from all replicas along a new first dimension (differentiable with ``sync_grads``)."""
    stacked = tensor.to(device).unsqueeze(0)
    if sync_grads:
        import torch_xla.core.functions as xf

        return xf.all_gather(stacked, dim=0)
    return _xm().all_gather(stacked, dim=0)


def broadcast(obj: Any, src: int, device: torch.device, rank: int) -> Any:
    """Send ``obj`` from replica ``src`` to all: tensors directly, anything else pickled into bytes."""
    xm = _xm()
    if isinstance(obj, Tensor):
        # Every replica passes a tensor of the same shape (as with torch.distributed.broadcast).
        result = obj.to(device).clone()
        xm.collective_broadcast([result], root_ordinal=src)
        return result
    payload = pickle.dumps(obj) if rank == src else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    size = int(xm.all_reduce("max", length).item())
    buffer = torch.zeros(size, dtype=torch.uint8)
    if rank == src:
        buffer[:] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    buffer = buffer.to(device)
    xm.collective_broadcast([buffer], root_ordinal=src)
    return pickle.loads(buffer.cpu().numpy().tobytes())


def barrier(name: str | None) -> None:
    """Wait until every replica reaches the barrier with this name."""
    _xm().rendezvous(name or "fabric_barrier")
