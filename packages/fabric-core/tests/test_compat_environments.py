"""Cluster environments behave as Lightning Fabric 2.6's where a user's script or job would notice (issue 13)."""

from __future__ import annotations

import logging
import os
import signal
import stat
from pathlib import Path

import pytest
from fabric_core.connector import resolve_plan
from fabric_core.environments.kubeflow import KubeflowEnvironment
from fabric_core.environments.lsf import LSFEnvironment
from fabric_core.environments.mpi import MPIEnvironment
from fabric_core.environments.slurm import SLURMEnvironment
from fabric_core.environments.torchelastic import TorchElasticEnvironment
from fabric_core.errors import MisconfigurationError
from fabric_core.utilities.warnings import PossibleUserWarning

SRUN_JOB = {
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "2",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_ID": "0004321",
    "SLURM_JOB_NAME": "train",
    "SLURM_JOB_NODELIST": "gpu[3-4]",
}


def _path_with_srun(folder: Path) -> str:
    """A PATH on which an executable named `srun` exists, as on a SLURM login or compute node."""
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return str(folder)


def test_default_main_port_is_lightnings_when_nothing_sets_it():
    assert SLURMEnvironment(env={"SLURM_NTASKS": "1"}).main_port == 12910  # no job id: not a batch job
    assert TorchElasticEnvironment(env={"WORLD_SIZE": "2"}).main_port == 12910
    # the job id's last four digits, or MASTER_PORT, still win
    assert SLURMEnvironment(env=SRUN_JOB).main_port == 15000 + 4321
    assert SLURMEnvironment(env={**SRUN_JOB, "MASTER_PORT": "2222"}).main_port == 2222
    assert TorchElasticEnvironment(env={"MASTER_PORT": "500"}).main_port == 500


def test_slurm_requeue_arguments_and_job_identity():
    env = SLURMEnvironment(env=SRUN_JOB)
    assert env.auto_requeue is True
    assert env.requeue_signal == signal.SIGUSR1
    custom = SLURMEnvironment(False, signal.SIGTERM, env=SRUN_JOB)
    assert custom.auto_requeue is False and custom.requeue_signal == signal.SIGTERM
    assert env.job_name(SRUN_JOB) == "train"
    assert env.job_id(SRUN_JOB) == 4321
    assert SLURMEnvironment.job_id({}) is None and SLURMEnvironment.job_name({}) is None
    # an interactive allocation does not lend its job id (logs of separate runs must not collide)
    assert SLURMEnvironment.job_id({**SRUN_JOB, "SLURM_JOB_NAME": "interactive"}) is None


def test_slurm_ranks_are_required_from_srun():
    env = SLURMEnvironment(env={"SLURM_NTASKS": "1"})
    with pytest.raises(KeyError):
        env.local_rank()
    with pytest.raises(KeyError):
        env.node_rank()
    assert (SLURMEnvironment(env=SRUN_JOB).local_rank(), SLURMEnvironment(env=SRUN_JOB).node_rank()) == (1, 1)


def test_torchelastic_ranks_are_required_from_torchrun():
    env = TorchElasticEnvironment(env={})
    with pytest.raises(KeyError):
        env.world_size()
    with pytest.raises(KeyError):
        env.local_rank()
    assert env.node_rank() == 0  # GROUP_RANK is optional, as in Lightning


def test_srun_available_but_not_used_warns(tmp_path):
    path = _path_with_srun(tmp_path)
    with pytest.warns(PossibleUserWarning, match=r"`srun` command is available .* but is not used. HINT: .*srun "):
        SLURMEnvironment(env={"PATH": path})
    with pytest.warns(PossibleUserWarning, match="is not used"):  # an interactive allocation is not `srun` either
        SLURMEnvironment(env={"PATH": path, "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "bash"})


def test_srun_used_or_absent_gives_no_warning(tmp_path, recwarn):
    SLURMEnvironment(env={**SRUN_JOB, "PATH": _path_with_srun(tmp_path)})
    SLURMEnvironment(env={"PATH": str(tmp_path / "empty")})
    # Fabric's own detection passes a mapping: it never warns, so no Fabric() on a login node is noisy
    assert not SLURMEnvironment.detect({"PATH": _path_with_srun(tmp_path)})
    assert not [w for w in recwarn if issubclass(w.category, PossibleUserWarning)]


def test_slurm_detect_without_arguments_hints_at_srun(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _path_with_srun(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    for name in ("SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.warns(PossibleUserWarning, match="is not used"):
        assert not SLURMEnvironment.detect()


def test_slurm_validate_settings_names_the_sbatch_option():
    env = SLURMEnvironment(env=SRUN_JOB)
    env.validate_settings(num_devices=2, num_nodes=2)
    with pytest.raises(ValueError, match=r"tasks per node configured in SLURM `--ntasks-per-node=2` does not match"):
        env.validate_settings(num_devices=4, num_nodes=2)
    with pytest.raises(MisconfigurationError, match=r"nodes configured in SLURM `--nodes=2` does not match"):
        env.validate_settings(num_devices=2, num_nodes=1)
    # only what SLURM states is checked
    SLURMEnvironment(env={"SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "PATH": ""}).validate_settings(4, 2)
    # interactive allocation: Fabric starts the processes, nothing to compare
    interactive = SLURMEnvironment(env={**SRUN_JOB, "SLURM_JOB_NAME": "interactive", "PATH": ""})
    interactive.validate_settings(num_devices=8, num_nodes=1)


def test_slurm_ntasks_without_ntasks_per_node_is_accepted():
    """Deliberate: `--ntasks=4 --nodes=2` works (Lightning raises RuntimeError asking for --ntasks-per-node)."""
    job = {k: v for k, v in SRUN_JOB.items() if k != "SLURM_NTASKS_PER_NODE"}
    plan = resolve_plan(accelerator="cpu", env=job)
    assert plan.cluster_environment.name == "slurm"
    assert (len(plan.devices), plan.num_nodes, plan.strategy.global_rank) == (2, 2, 3)


def test_torchelastic_count_mismatch_says_product_and_world_size():
    env = TorchElasticEnvironment(env={"WORLD_SIZE": "8"})
    env.validate_settings(num_devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"the product \(2 \* 2\) does not match the world size \(8\)"):
        env.validate_settings(num_devices=2, num_nodes=2)


def _rankfile(tmp_path: Path) -> str:
    path = tmp_path / "rankfile"
    path.write_text("launch\nnodeA\nnodeA\nnodeB\nnodeB\n")
    return str(path)


def test_lsf_checks_rank_file_and_job_id_at_construction(tmp_path):
    with pytest.raises(ValueError, match="Did not find the environment variable `LSB_DJOB_RANKFILE`"):
        LSFEnvironment(env={"LSB_JOBID": "1234"})
    with pytest.raises(ValueError, match="The environment variable `LSB_DJOB_RANKFILE` is empty"):
        LSFEnvironment(env={"LSB_JOBID": "1234", "LSB_DJOB_RANKFILE": ""})
    with pytest.raises(ValueError, match="Could not find job id in environment variable LSB_JOBID"):
        LSFEnvironment(env={"LSB_DJOB_RANKFILE": _rankfile(tmp_path)})
    # MASTER_PORT makes the job id unnecessary; LSB_HOSTS stands in for the rank file
    assert LSFEnvironment(env={"LSB_DJOB_RANKFILE": _rankfile(tmp_path), "MASTER_PORT": "7000"}).main_port == 7000
    assert LSFEnvironment(env={"LSB_JOBID": "1234", "LSB_HOSTS": "launch nodeA"}).main_address == "nodeA"


def test_lsf_detected_from_the_variables_lightning_requires(tmp_path):
    jsrun = {
        "LSB_JOBID": "1234",
        "LSB_DJOB_RANKFILE": _rankfile(tmp_path),
        "JSM_NAMESPACE_SIZE": "4",
        "JSM_NAMESPACE_LOCAL_RANK": "1",
    }
    assert LSFEnvironment.detect(jsrun)
    assert not LSFEnvironment.detect({k: v for k, v in jsrun.items() if k != "LSB_DJOB_RANKFILE"})
    env = LSFEnvironment(env={**jsrun, "JSM_NAMESPACE_RANK": "3"})
    assert (env.main_address, env.main_port, env.world_size(), env.global_rank()) == ("nodeA", 10234, 4, 3)


@pytest.mark.parametrize(
    "environment",
    [
        SLURMEnvironment(env=SRUN_JOB),
        TorchElasticEnvironment(env={"WORLD_SIZE": "4", "RANK": "3"}),
        KubeflowEnvironment(env={"WORLD_SIZE": "4", "RANK": "3"}),
        MPIEnvironment(env={"PMI_SIZE": "4", "PMI_RANK": "3"}),
        LSFEnvironment(
            env={"LSB_JOBID": "1", "LSB_HOSTS": "a b", "JSM_NAMESPACE_SIZE": "4", "JSM_NAMESPACE_RANK": "3"}
        ),
    ],
    ids=lambda e: type(e).__name__,
)
def test_scheduler_ranks_win_over_setters_and_say_so(environment, caplog):
    with caplog.at_level(logging.DEBUG, logger="fabric_core.environments"):
        environment.set_global_rank(100)
        environment.set_world_size(100)
    assert (environment.world_size(), environment.global_rank()) == (4, 3)
    assert f"{type(environment).__name__}.set_global_rank was called" in caplog.text
    assert "setting global rank is not allowed" in caplog.text
    assert "setting world size is not allowed" in caplog.text


def test_kubeflow_is_never_auto_detected():
    """Deliberate: detect() answers False (Lightning raises NotImplementedError); Fabric asks every environment."""
    assert KubeflowEnvironment.detect({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "1"}) is False


def test_lightning_submodule_paths_name_the_same_classes():
    from fabric_core.plugins.environments.cluster_environment import ClusterEnvironment
    from fabric_core.plugins.environments.kubeflow import KubeflowEnvironment as Kubeflow
    from fabric_core.plugins.environments.lightning import LightningEnvironment
    from fabric_core.plugins.environments.lsf import LSFEnvironment as LSF
    from fabric_core.plugins.environments.mpi import MPIEnvironment as MPI
    from fabric_core.plugins.environments.slurm import SLURMEnvironment as SLURM
    from fabric_core.plugins.environments.torchelastic import TorchElasticEnvironment as TorchElastic

    assert (SLURM, LSF, MPI, Kubeflow, TorchElastic) == (
        SLURMEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        KubeflowEnvironment,
        TorchElasticEnvironment,
    )
    assert LightningEnvironment.__name__ == "LocalEnvironment" and issubclass(LightningEnvironment, ClusterEnvironment)
