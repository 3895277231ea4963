"""Plan resolution: choices, validation at construction, CLI overrides, cluster detection."""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from fabric_core.connector import resolve_plan
from fabric_core.environments.kubeflow import KubeflowEnvironment
from fabric_core.environments.local import LocalEnvironment
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.precision import Precision
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import TrueDtypePrecision
from fabric_core.strategies.ddp import DDPStrategy
from fabric_core.strategies.single_device import SingleDeviceStrategy


def test_defaults_give_single_device_cpu():
    plan = resolve_plan(env={})
    assert plan.accelerator.name == "cpu"
    assert isinstance(plan.strategy, SingleDeviceStrategy)
    assert plan.strategy.root_device == torch.device("cpu")
    assert plan.precision.name == "32-true"
    assert isinstance(plan.cluster_environment, LocalEnvironment)


@pytest.mark.parametrize(
    ("devices", "expected"),
    [(2, [0, 1]), ("2", [0, 1]), ("0,1", [0, 1]), ([0, 1, 2], [0, 1, 2]), ("auto", [0]), (None, [0]), (1, [0])],
)
def test_cpu_device_forms(devices, expected):
    assert resolve_plan(accelerator="cpu", devices=devices, env={}).devices == expected


@pytest.mark.parametrize("devices", [0, -2, "two", True, 1.5, [], ["a"], "0,0", [0, 0]])
def test_invalid_devices_are_rejected_with_the_valid_forms(devices):
    with pytest.raises(MisconfigurationError, match="Valid forms"):
        Fabric(accelerator="cpu", devices=devices)


def test_auto_strategy_is_ddp_for_several_devices():
    plan = resolve_plan(accelerator="cpu", devices=2, env={})
    assert isinstance(plan.strategy, DDPStrategy)
    assert plan.strategy.world_size == 2
    assert plan.strategy.process_group_backend == "gloo"


@pytest.mark.parametrize(
    ("name", "start_method", "find_unused"),
    [
        ("ddp", "popen", False),
        ("ddp_spawn", "spawn", False),
        ("ddp_fork", "fork", False),
        ("ddp_notebook", "fork", False),
        ("ddp_find_unused_parameters_true", "popen", True),
    ],
)
def test_ddp_variants(name, start_method, find_unused):
    plan = resolve_plan(accelerator="cpu", strategy=name, devices=2, env={})
    assert plan.strategy.name == name
    assert plan.strategy.start_method == start_method
    assert plan.strategy.ddp_kwargs["find_unused_parameters"] is find_unused


def test_strategy_instance_is_used_and_wired():
    strategy = DDPStrategy(start_method="spawn", timeout=12)
    plan = resolve_plan(strategy=strategy, devices=2, env={})
    assert plan.strategy is strategy
    assert strategy.accelerator is plan.accelerator
    assert strategy.timeout.total_seconds() == 12
    assert len(strategy.parallel_devices) == 2


@pytest.mark.parametrize(
    ("argument", "value", "listing"),
    [
        ("accelerator", "quantum", "'cpu'"),
        ("strategy", "warp_drive", "'ddp'"),
        ("precision", "8-bit", "'bf16-mixed'"),
        ("precision", [16], "'32-true'"),
        ("num_nodes", 0, "positive int"),
        ("num_nodes", "2", "positive int"),
        ("plugins", ["not a plugin"], "Precision, ClusterEnvironment or CheckpointIO"),
    ],
)
def test_every_invalid_argument_fails_at_construction_listing_valid_values(argument, value, listing):
    with pytest.raises(MisconfigurationError, match=listing):
        Fabric(**{argument: value})


def test_single_device_strategy_with_two_devices_is_refused():
    with pytest.raises(MisconfigurationError, match="runs one process"):
        Fabric(accelerator="cpu", strategy="single_device", devices=2)


@pytest.mark.parametrize(
    ("alias", "canonical", "warns"),
    [
        (32, "32-true", False),
        ("32", "32-true", False),
        (64, "64-true", False),
        ("64", "64-true", False),
        (16, "16-mixed", True),
        ("bf16", "bf16-mixed", True),
        ("bf16-true", "bf16-true", False),
    ],
)
def test_precision_aliases(alias, canonical, warns):
    from fabric_core.precision.names import normalise_precision

    if warns:
        with pytest.warns(UserWarning, match="ambiguous"):
            assert normalise_precision(alias) == canonical
    else:
        assert normalise_precision(alias) == canonical


def test_sixteen_mixed_on_cpu_warns_and_uses_bf16_mixed():
    """As in Lightning 2.6: no float16 AMP on the CPU, so bf16-mixed is used with a warning."""
    with pytest.warns(UserWarning, match="Using precision='bf16-mixed' instead"):
        fabric = Fabric(accelerator="cpu", precision="16-mixed")
    assert fabric.strategy.precision.name == "bf16-mixed"
    assert fabric.strategy.precision.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "cls", "dtype"),
    [
        ("bf16-mixed", MixedPrecision, torch.bfloat16),
        ("bf16-true", TrueDtypePrecision, torch.bfloat16),
        ("16-true", TrueDtypePrecision, torch.float16),
        ("64-true", TrueDtypePrecision, torch.float64),
    ],
)
def test_precision_plugins(name, cls, dtype):
    plan = resolve_plan(accelerator="cpu", precision=name, env={})
    assert isinstance(plan.precision, cls)
    assert plan.precision.dtype == dtype


def test_precision_plugin_instance_in_plugins():
    custom = Precision()
    assert resolve_plan(plugins=[custom], env={}).precision is custom


def test_two_plugins_of_one_kind_are_refused():
    with pytest.raises(MisconfigurationError, match="more than one Precision"):
        resolve_plan(plugins=[Precision(), Precision()], env={})


# ------------------------------------------------------------- CLI layer
def test_cli_options_fill_what_the_code_leaves_at_defaults():
    env = {"FABRIC_CLI_STRATEGY": "ddp_spawn", "FABRIC_CLI_DEVICES": "2", "FABRIC_CLI_PRECISION": "bf16-mixed"}
    plan = resolve_plan(env=env)
    assert plan.strategy.name == "ddp_spawn"
    assert plan.devices == [0, 1]
    assert plan.precision.name == "bf16-mixed"


def test_cli_option_that_agrees_with_code_is_fine():
    plan = resolve_plan(
        strategy="ddp_spawn", devices=2, env={"FABRIC_CLI_STRATEGY": "ddp_spawn", "FABRIC_CLI_DEVICES": "2"}
    )
    assert plan.strategy.name == "ddp_spawn"


def test_code_conflicting_with_cli_raises_a_clear_error():
    with pytest.raises(MisconfigurationError, match="strategy='ddp_spawn' in your code conflicts with --strategy fsdp"):
        resolve_plan(strategy="ddp_spawn", env={"FABRIC_CLI_STRATEGY": "fsdp"})


# ------------------------------------------------------- cluster detection
TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "x",
    "RANK": "3",
    "GROUP_RANK": "1",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "WORLD_SIZE": "4",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29500",
}
SLURM = {
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "2",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "SLURM_NNODES": "2",
    "SLURM_NTASKS_PER_NODE": "2(x2)",
    "SLURM_JOB_NODELIST": "node[07-08]",
    "SLURM_JOB_ID": "123456",
    "SLURM_JOB_NAME": "train",
}
LSF = {
    "LSB_JOBID": "77",
    "JSM_NAMESPACE_SIZE": "4",
    "JSM_NAMESPACE_RANK": "1",
    "JSM_NAMESPACE_LOCAL_RANK": "1",
    "JSM_NAMESPACE_LOCAL_SIZE": "2",
    "LSB_HOSTS": "batch1 hostA hostA hostB hostB",
}
OPENMPI = {
    "OMPI_COMM_WORLD_SIZE": "4",
    "OMPI_COMM_WORLD_RANK": "3",
    "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
    "MASTER_ADDR": "10.0.0.5",
    "MASTER_PORT": "1234",
}
MPICH = {"PMI_SIZE": "2", "PMI_RANK": "1", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}


@pytest.mark.parametrize(
    ("env", "name", "ranks", "address", "port"),
    [
        (TORCHRUN, "torchelastic", (4, 3, 1, 1), "10.0.0.1", 29500),
        (SLURM, "slurm", (4, 2, 0, 1), "node07", 15000 + 3456),
        (LSF, "lsf", (4, 1, 1, None), "hostA", 10077),
        (OPENMPI, "mpi", (4, 3, 1, 1), "10.0.0.5", 1234),
    ],
)
def test_environment_detection(env, name, ranks, address, port):
    plan = resolve_plan(accelerator="cpu", env=env)
    environment = plan.cluster_environment
    assert environment.name == name
    assert environment.creates_processes_externally
    world, rank, local, node = ranks
    assert (environment.world_size(), environment.global_rank(), environment.local_rank()) == (world, rank, local)
    if node is not None:
        assert environment.node_rank() == node
    assert environment.main_address == address
    assert environment.main_port == port
    # devices/num_nodes come from the scheduler when the code leaves them at their defaults
    assert len(plan.devices) * plan.num_nodes == world
    assert plan.strategy.global_rank == rank
    assert plan.strategy.world_size == world
    assert plan.strategy.launcher is None


def test_mpich_single_node_port_is_shared_by_all_ranks_without_mpi4py():
    from fabric_core.environments.mpi import MPIEnvironment

    env = MPIEnvironment(env=MPICH)
    assert env.world_size() == 2 and env.global_rank() == 1 and env.local_rank() == 1
    assert env.main_address == "127.0.0.1"
    assert 20000 <= env.main_port < 40000


def test_interactive_slurm_allocation_is_not_treated_as_srun():
    assert resolve_plan(env={**SLURM, "SLURM_JOB_NAME": "bash"}).cluster_environment.name == "local"


def test_scheduler_and_code_disagreeing_on_process_count_is_an_error():
    with pytest.raises(MisconfigurationError, match="4 processes.*devices=3"):
        resolve_plan(accelerator="cpu", devices=3, env=TORCHRUN)


def test_kubeflow_is_explicit_only():
    env = {"MASTER_ADDR": "pod-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2"}
    assert resolve_plan(env=env).cluster_environment.name == "local"
    kubeflow = KubeflowEnvironment(env=env)
    plan = resolve_plan(accelerator="cpu", strategy="ddp", plugins=[kubeflow], num_nodes=3, env=env)
    assert plan.cluster_environment is kubeflow
    assert (plan.strategy.world_size, plan.strategy.global_rank, plan.strategy.node_rank) == (3, 2, 2)
    assert kubeflow.main_address == "pod-0" and kubeflow.main_port == 23456


def test_slurm_nodelist_expansion():
    from fabric_core.environments.slurm import expand_nodelist

    assert expand_nodelist("node[01-03,7],gpu5") == ["node01", "node02", "node03", "node7", "gpu5"]
    assert expand_nodelist("single") == ["single"]
