"""Train a small decoder-only transformer with tensor parallelism x FSDP2 on a 2-D device mesh.

fabric run --devices 4 examples/model_parallel_transformer.py                 # 2 (data) x 2 (tensor)
fabric run --devices 2 examples/model_parallel_transformer.py                 # tensor parallel only
fabric run --devices 4 examples/model_parallel_transformer.py --replicate 2   # HSDP x TP: 2 x 1 x 2

The text is the source of Python's own ``textwrap`` module (ships with Python: no download),
learned character by character. ``parallelize`` is the plan: attention and MLP projections split
column-wise then row-wise over ``tensor_parallel``, norms sequence-parallel, each block then the
whole model sharded with FSDP2 over ``data_parallel``.
"""

from __future__ import annotations

import argparse
import math
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from fabric_core import Fabric
from fabric_core.strategies import MeshConfig, ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh


@dataclass(frozen=True)
class Config:
    vocab_size: int = 128  # ASCII characters
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    hidden_dim: int = 128
    seq_len: int = 64


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (batch, seq, heads, head_dim), computed on the fly (no buffers,
    so a model created on the meta device needs nothing but ``reset_parameters`` to be ready)."""
    seq, half = x.shape[1], x.shape[-1] // 2
    freqs = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angles = torch.arange(seq, device=x.device, dtype=torch.float32)[:, None] * freqs
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.head_dim = config.dim // config.n_heads
        self.wq = nn.Linear(config.dim, config.dim, bias=False)
        self.wk = nn.Linear(config.dim, config.dim, bias=False)
        self.wv = nn.Linear(config.dim, config.dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        # Under tensor parallelism each rank holds n_heads / tp heads: the head count comes from the shapes.
        q, k, v = (w(x).view(batch, seq, -1, self.head_dim) for w in (self.wq, self.wk, self.wv))
        q, k = rotary(q), rotary(k)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.hidden_dim, bias=False)
        self.w2 = nn.Linear(config.hidden_dim, config.dim, bias=False)
        self.w3 = nn.Linear(config.dim, config.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.dim)
        self.attention = Attention(config)
        self.ffn_norm = nn.RMSNorm(config.dim)
        self.feed_forward = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.RMSNorm(config.dim)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h))


def parallelize(model: Transformer, device_mesh: DeviceMesh) -> Transformer:
    """The plan. Called by ``fabric.setup`` with the mesh the strategy built."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tp_mesh = device_mesh["tensor_parallel"]
    if tp_mesh.size() > 1:
        # Between blocks the activations are split along the sequence (Shard(1)); attention and the MLP
        # gather the sequence, split their projections column-wise (heads / hidden units), and the
        # row-wise output projection reduce-scatters back to sequence shards.
        parallelize_module(
            model,
            tp_mesh,
            {
                "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
                "norm": SequenceParallel(),
                "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
            },
        )
        for block in model.layers:
            parallelize_module(
                block,
                tp_mesh,
                {
                    "attention_norm": SequenceParallel(),
                    "attention": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
                    "attention.wq": ColwiseParallel(),
                    "attention.wk": ColwiseParallel(),
                    "attention.wv": ColwiseParallel(),
                    "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
                    "ffn_norm": SequenceParallel(),
                    "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
                    "feed_forward.w1": ColwiseParallel(),
                    "feed_forward.w3": ColwiseParallel(),
                    "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
                },
            )
    names = device_mesh.mesh_dim_names or ()
    # HSDP: replicate over the first dimension, shard over the second; plain FSDP2 otherwise.
    dp_mesh = (
        device_mesh["data_parallel_replicate", "data_parallel_shard"]
        if "data_parallel_replicate" in names
        else device_mesh["data_parallel"]
    )
    if dp_mesh.size() > 1:
        for block in model.layers:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(model, mesh=dp_mesh)
    return model


def load_text() -> torch.Tensor:
    """The characters of ``textwrap.py`` as ASCII codes."""
    text = Path(textwrap.__file__).read_text(encoding="utf-8")
    return torch.tensor([min(ord(c), 127) for c in text], dtype=torch.long)


def global_batch(data: torch.Tensor, step: int, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random windows on every rank for a given step (inputs and next-character targets)."""
    generator = torch.Generator().manual_seed(step)
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def local_slice(batch: torch.Tensor, fabric: Fabric) -> torch.Tensor:
    """This rank's part of the global batch: split over data parallel, the same for tensor-parallel peers."""
    split = fabric.strategy.distributed_sampler_kwargs
    per_rank = batch.shape[0] // split["num_replicas"]
    return batch[split["rank"] * per_rank : (split["rank"] + 1) * per_rank]


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (split over data parallel)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--tensor-parallel", type=int, default=2)
    parser.add_argument("--replicate", type=int, default=1, help="HSDP: data-parallel replicas (> 1: 3-D mesh)")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--checkpoint", default=None, help="save the final state here (a folder of shards)")
    args = parser.parse_args()
    # FSDP2 warns that the root returns a view (the gathered logits); this loop never modifies it in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")

    if args.replicate > 1:
        strategy = ModelParallelStrategy(
            parallelize, mesh=MeshConfig(data_parallel_replicate=args.replicate, tensor_parallel=args.tensor_parallel)
        )
    else:
        strategy = ModelParallelStrategy(parallelize, tensor_parallel_size=args.tensor_parallel)
    fabric = Fabric(accelerator="cpu", strategy=strategy, devices=args.devices)
    fabric.launch()
    fabric.seed_everything(0)  # the same initial weights on every rank before the plan shards them

    config = Config()
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model, optimizer = fabric.setup(model, optimizer)
    mesh = fabric.strategy.device_mesh
    fabric.print(f"mesh {dict(zip(mesh.mesh_dim_names, mesh.shape))} on {fabric.world_size} processes")

    data = load_text()
    start = time.perf_counter()
    loss = torch.tensor(math.inf)
    for step in range(args.steps):
        inputs, targets = (local_slice(t, fabric) for t in global_batch(data, step, args.batch_size, config.seq_len))
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, config.vocab_size), targets.reshape(-1))
        optimizer.zero_grad()
        fabric.backward(loss)
        fabric.clip_gradients(model, optimizer, max_norm=1.0)
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            mean_loss = fabric.all_reduce(loss.detach(), group=mesh["data_parallel"]).item()
            fabric.print(f"step {step:4d}  loss {mean_loss:.4f}  ({time.perf_counter() - start:.1f} s)")
    if args.checkpoint:
        fabric.save(args.checkpoint, {"model": model, "optimizer": optimizer, "step": args.steps})
    final = fabric.all_reduce(loss.detach(), group=mesh["data_parallel"]).item()
    fabric.print(f"final loss {final:.4f} (a uniform guess over {config.vocab_size} characters: {math.log(128):.2f})")
    return final


if __name__ == "__main__":
    main()
