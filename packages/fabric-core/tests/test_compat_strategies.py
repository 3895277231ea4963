"""Lightning's strategy names and FSDPStrategy arguments, mapped onto FSDP2 (real gloo processes)."""

from __future__ import annotations

import json

import pytest
import torch
from fabric_core import Fabric
from fabric_core.connector import resolve_plan
from fabric_core.errors import MisconfigurationError
from fabric_core.strategies import DDPStrategy, FSDPStrategy
from torch.distributed.fsdp import CPUOffload, MixedPrecision, ShardingStrategy


def test_dp_runs_as_ddp_with_a_warning_like_lightning_on_cpu():
    with pytest.warns(UserWarning, match="not supported on CPUs.*strategy='ddp'"):
        plan = resolve_plan(accelerator="cpu", strategy="dp", devices=2, env={})
    assert isinstance(plan.strategy, DDPStrategy)
    assert plan.strategy.start_method == "popen"
    assert plan.strategy.world_size == 2


def test_fsdp_cpu_offload_string():
    plan = resolve_plan(accelerator="cpu", strategy="fsdp_cpu_offload", devices=2, env={})
    assert isinstance(plan.strategy, FSDPStrategy)
    assert plan.strategy.cpu_offload == CPUOffload(offload_params=True)
    assert plan.strategy.name == "fsdp_cpu_offload"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FULL_SHARD", ShardingStrategy.FULL_SHARD),
        ("shard_grad_op", ShardingStrategy.SHARD_GRAD_OP),
        (ShardingStrategy.NO_SHARD, ShardingStrategy.NO_SHARD),
        ("_HYBRID_SHARD_ZERO2", ShardingStrategy._HYBRID_SHARD_ZERO2),
    ],
)
def test_sharding_strategy_as_string_or_enum(value, expected):
    strategy = FSDPStrategy(sharding_strategy=value, device_mesh=(1, 1) if "HYBRID" in expected.name else None)
    assert strategy.sharding_strategy is expected
    assert strategy.reshard_after_forward is (expected in (ShardingStrategy.FULL_SHARD, ShardingStrategy.HYBRID_SHARD))


def test_invalid_sharding_strategy_lists_the_valid_ones():
    with pytest.raises(MisconfigurationError, match="FULL_SHARD, SHARD_GRAD_OP, NO_SHARD, HYBRID_SHARD"):
        FSDPStrategy(sharding_strategy="EVERYWHERE")


def test_hybrid_needs_a_mesh_or_a_wrap_policy():
    with pytest.raises(MisconfigurationError, match="device_mesh"):
        FSDPStrategy(sharding_strategy="HYBRID_SHARD")
    with pytest.raises(RuntimeError, match="hybrid sharding strategy requires"):  # Lightning's exception type
        FSDPStrategy(sharding_strategy="_HYBRID_SHARD_ZERO2")
    FSDPStrategy(sharding_strategy="HYBRID_SHARD", auto_wrap_policy={torch.nn.Linear})


def test_cpu_offload_forms():
    from torch.distributed.fsdp import CPUOffloadPolicy

    assert FSDPStrategy().cpu_offload == CPUOffload(offload_params=False)
    assert FSDPStrategy(cpu_offload=True).cpu_offload.offload_params
    assert FSDPStrategy(cpu_offload=CPUOffload(offload_params=True)).cpu_offload.offload_params
    assert FSDPStrategy(cpu_offload=CPUOffloadPolicy()).cpu_offload.offload_params
    with pytest.raises(MisconfigurationError, match="cpu_offload"):
        FSDPStrategy(cpu_offload="yes")


def test_both_activation_checkpointing_arguments_refused():
    with pytest.raises(MisconfigurationError, match="both"):
        FSDPStrategy(activation_checkpointing=torch.nn.Linear, activation_checkpointing_policy={torch.nn.Linear})


def test_fsdp1_keywords_without_fsdp2_meaning_are_refused_with_the_alternative():
    with pytest.raises(MisconfigurationError, match="process_group.*device_mesh"):
        FSDPStrategy(process_group=object())
    with pytest.raises(MisconfigurationError, match="unexpected keyword argument 'flat_params'.*limit_all_gathers"):
        FSDPStrategy(flat_params=True)
    FSDPStrategy(limit_all_gathers=True, use_orig_params=True, forward_prefetch=False, sync_module_states=True)


def test_invalid_device_mesh_refused():
    with pytest.raises(MisconfigurationError, match="device_mesh"):
        FSDPStrategy(device_mesh=(2, "x"))


def test_mixed_precision_maps_onto_the_fsdp2_policy():
    from torch.distributed.fsdp import MixedPrecisionPolicy

    strategy = FSDPStrategy(mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    assert strategy._mp_policy == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    assert strategy.mixed_precision_config.param_dtype is torch.bfloat16
    with pytest.raises(MisconfigurationError, match="mixed_precision"):
        FSDPStrategy(mixed_precision="bf16")


# ------------------------------------------------------------------------------------------------
# Real 2-process runs: each configuration trains 3 steps on half the batch per rank; the losses must
# equal single-process training on the whole batch, and the parameters must be laid out as asked.
FSDP_SCRIPT = r"""
import functools, json, sys
import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecision, ShardingStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy, size_based_auto_wrap_policy
from fabric_core import Fabric
from fabric_core.strategies import FSDPStrategy
from fabric_core.wrappers import unwrap_objects


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x):
        return torch.relu(self.lin(x)) * self.scale


def build():
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block(), nn.Linear(4, 1))


def data():
    torch.manual_seed(1)
    return torch.randn(8, 4), torch.randn(8, 1)


def reference(steps):
    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    out = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        out.append(loss.item())
    return out


CONFIGS = {
    "hybrid_1x2": dict(sharding_strategy="HYBRID_SHARD", device_mesh=(1, 2)),
    "no_shard": dict(sharding_strategy="NO_SHARD"),
    "shard_grad_op_size_based_wrap_checkpointing_policy": dict(
        sharding_strategy=ShardingStrategy.SHARD_GRAD_OP,
        auto_wrap_policy=functools.partial(size_based_auto_wrap_policy, min_num_params=10),
        activation_checkpointing_policy={Block},
    ),
    "cpu_offload_old_checkpointing_argument": dict(
        cpu_offload=True, auto_wrap_policy=ModuleWrapPolicy({Block}), activation_checkpointing=Block
    ),
    "sync_module_states_mixed_precision": dict(
        sync_module_states=True,
        limit_all_gathers=True,
        use_orig_params=True,
        mixed_precision=MixedPrecision(param_dtype=torch.float64, reduce_dtype=torch.float64, buffer_dtype=torch.float64),
    ),
}


def work(fabric, name):
    model = build()
    if name.startswith("sync_module_states") and fabric.global_rank == 1:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # rank 0's weights must win
    model = fabric.setup_module(model)
    opt = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    x, y = data()
    half = slice(4 * fabric.global_rank, 4 * fabric.global_rank + 4)
    losses = []
    for _ in range(3):
        out = model(x[half])
        loss = nn.functional.mse_loss(out.float(), y[half])
        opt.zero_grad(); fabric.backward(loss); opt.step()
        losses.append(fabric.all_reduce(loss.detach().float(), reduce_op="mean").item())
    root = unwrap_objects(model)
    p = next(root.parameters())
    group = root._get_fsdp_state()._fsdp_param_group
    return {
        "losses": losses,
        "mesh": list(p.device_mesh.shape),
        "placements": [str(pl) for pl in p.placements],
        "offload": type(group.offload_policy).__name__,
        "output_dtype": str(out.dtype),
        "buffer_dtype": str(next(root.buffers()).dtype),
        "units": sum(1 for m in root.modules() if isinstance(m, FSDPModule)),
        "checkpointed": sum(1 for m in root.modules() if isinstance(m, CheckpointWrapper)),
    }


if __name__ == "__main__":
    for name in sys.argv[1].split(","):
        strategy = FSDPStrategy(start_method="spawn", **CONFIGS[name])
        fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
        print(json.dumps({"name": name, "reference": reference(3), **fabric.launch(work, name)}), flush=True)
"""


def _run(script_runner, names: list[str]) -> dict[str, dict]:
    result = script_runner(FSDP_SCRIPT, ",".join(names), timeout=1100)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    found = {row["name"]: row for row in rows}
    assert sorted(found) == sorted(names), result.stdout + result.stderr
    for row in rows:
        assert row["losses"] == pytest.approx(row["reference"], rel=1e-5), row["name"]
    return found


@pytest.mark.multiprocess
@pytest.mark.timeout(1200)
def test_fsdp_lightning_arguments_on_two_processes(preloaded_script_runner):
    rows = _run(preloaded_script_runner, list(_CONFIG_NAMES))
    # HYBRID_SHARD: replicated across the first mesh dimension, sharded along the second
    assert rows["hybrid_1x2"]["mesh"] == [1, 2]
    assert rows["hybrid_1x2"]["placements"] == ["R", "S(0)"]
    # NO_SHARD: every rank holds whole parameters (the replicate dimension spans the world)
    assert rows["no_shard"]["mesh"] == [2, 1]
    assert rows["no_shard"]["placements"] == ["R", "S(0)"]
    grad_op = rows["shard_grad_op_size_based_wrap_checkpointing_policy"]
    assert grad_op["placements"] == ["S(0)"]
    assert grad_op["units"] > 3  # the size-based FSDP1 policy picked submodules
    assert grad_op["checkpointed"] == 2
    offload = rows["cpu_offload_old_checkpointing_argument"]
    assert offload["offload"] == "CPUOffloadPolicy"
    assert offload["units"] == 3  # two Blocks from ModuleWrapPolicy, and the root
    assert offload["checkpointed"] == 2
    synced = rows["sync_module_states_mixed_precision"]
    assert synced["offload"] == "OffloadPolicy"  # no offloading unless asked
    assert synced["output_dtype"] == "torch.float64"
    assert synced["buffer_dtype"] == "torch.float64"


_CONFIG_NAMES = (
    "hybrid_1x2",
    "no_shard",
    "shard_grad_op_size_based_wrap_checkpointing_policy",
    "cpu_offload_old_checkpointing_argument",
    "sync_module_states_mixed_precision",
)


def test_fabric_accepts_fsdp_strategy_object_with_lightning_arguments():
    strategy = FSDPStrategy(sharding_strategy="SHARD_GRAD_OP", state_dict_type="full", cpu_offload=False)
    fabric = Fabric(accelerator="cpu", devices=2, strategy=strategy)
    assert fabric.strategy is strategy


# ------------------------------------------------------------------------------------------------
# Collectives on sub-groups (Lightning's decoupled RL example: rank 0 plays, ranks 1..N-1 train).
COLLECTIVES_SCRIPT = r"""
import json, socket, sys
import torch
import torch.multiprocessing as mp
from fabric_core.plugins.collectives import CollectibleGroup, TorchCollective


def work(rank, world_size, port, out_dir):
    world = TorchCollective().setup(main_address="127.0.0.1", main_port=port, backend="gloo", rank=rank, world_size=world_size)
    trainers = TorchCollective().create_group(ranks=list(range(1, world_size)))  # every rank calls it
    out = {"world_rank": world.rank, "world_size": world.world_size, "is_group": isinstance(world.group, CollectibleGroup)}
    out["world_sum"] = world.all_reduce(torch.tensor(float(rank + 1)), op="sum").item()
    out["world_max"] = world.all_reduce(torch.tensor(float(rank)), op=torch.distributed.ReduceOp.MAX).item()
    out["objects"] = world.all_gather_object([None] * world_size, {"rank": rank})
    if rank == 0:  # the player sends its data to the first trainer
        world.send(torch.tensor([42.0, float(world_size)]), dst=1)
        trainers.barrier()  # not a member: returns at once
    else:
        if rank == 1:
            out["received"] = world.recv(torch.zeros(2), src=0).tolist()
        out["trainer_rank"], out["trainer_size"] = trainers.rank, trainers.world_size
        out["trainer_avg"] = trainers.all_reduce(torch.tensor(float(rank)), op="avg").item()
        out["trainer_mean"] = trainers.all_reduce(torch.tensor(float(rank)), op="mean").item()
        gathered = trainers.all_gather([torch.zeros(1) for _ in range(world_size - 1)], torch.tensor([float(rank)]))
        out["trainer_gather"] = [t.item() for t in gathered]
        out["trainer_broadcast"] = trainers.broadcast(torch.tensor(float(rank * 10)), src=world_size - 1).item()
        trainers.barrier()
    world.barrier()
    trainers.teardown()
    world.teardown()
    out["initialized_after"] = torch.distributed.is_initialized()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    world_size, out_dir = int(sys.argv[1]), sys.argv[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(work, args=(world_size, port, out_dir), nprocs=world_size, join=True)
"""


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
@pytest.mark.parametrize("world_size", [2, 3])
def test_torch_collective_on_sub_groups(preloaded_script_runner, tmp_path, world_size):
    result = preloaded_script_runner(COLLECTIVES_SCRIPT, str(world_size), str(tmp_path), timeout=800)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]
    trainers = list(range(1, world_size))
    for rank, row in enumerate(rows):
        assert (row["world_rank"], row["world_size"], row["is_group"]) == (rank, world_size, True)
        assert row["world_sum"] == sum(range(1, world_size + 1))
        assert row["world_max"] == world_size - 1
        assert row["objects"] == [{"rank": r} for r in range(world_size)]
        assert row["initialized_after"] is False  # the collective that created the default group destroyed it
        if rank == 0:
            assert "trainer_rank" not in row
            continue
        assert (row["trainer_rank"], row["trainer_size"]) == (rank - 1, world_size - 1)
        assert row["trainer_avg"] == row["trainer_mean"] == pytest.approx(sum(trainers) / len(trainers))
        assert row["trainer_gather"] == [float(r) for r in trainers]
        assert row["trainer_broadcast"] == (world_size - 1) * 10
    assert rows[1]["received"] == [42.0, float(world_size)]


def test_collective_op_names_are_checked():
    from fabric_core.plugins.collectives import SingleDeviceCollective, TorchCollective

    with pytest.raises(ValueError, match="not a member of `ReduceOp`.*sum"):
        TorchCollective()._native_op("median")
    with pytest.raises(RuntimeError, match="does not own a group"):
        _ = SingleDeviceCollective().group
    single = SingleDeviceCollective().create_group()
    assert single.group.size() == 1 and single.all_reduce(torch.tensor(2.0)).item() == 2.0
