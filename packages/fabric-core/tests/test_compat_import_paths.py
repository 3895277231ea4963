"""A Lightning script ported by swapping ``lightning.fabric`` for ``fabric_core`` finds these names at the same
paths: environments and checkpoint IO under ``plugins``, backend precisions, and utilities' helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset


def test_environments_at_lightnings_plugin_path(monkeypatch):
    from fabric_core.environments.local import LocalEnvironment
    from fabric_core.environments.slurm import SLURMEnvironment as CoreSLURM
    from fabric_core.plugins import environments
    from fabric_core.plugins.environments import ClusterEnvironment, LightningEnvironment, SLURMEnvironment

    assert LightningEnvironment is LocalEnvironment
    assert SLURMEnvironment is CoreSLURM
    assert issubclass(SLURMEnvironment, ClusterEnvironment)
    assert {"KubeflowEnvironment", "LSFEnvironment", "MPIEnvironment", "TorchElasticEnvironment"} <= set(
        dir(environments)
    )
    for name in dir(environments):
        assert isinstance(getattr(environments, name), type)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchEnvironment'"):
        environments.NoSuchEnvironment


def test_checkpoint_io_and_precisions_at_lightnings_plugin_paths():
    from fabric_core.checkpoint.torch_io import TorchCheckpointIO as Core
    from fabric_core.plugins import CheckpointIO, TorchCheckpointIO
    from fabric_core.plugins.io import TorchCheckpointIO as FromIO
    from fabric_core.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision

    assert TorchCheckpointIO is Core and FromIO is Core and issubclass(Core, CheckpointIO)
    assert all(issubclass(cls, Precision) for cls in (DoublePrecision, HalfPrecision, MixedPrecision))
    with pytest.raises(AttributeError):
        from fabric_core.plugins import io

        io.NoSuchIO


def test_data_helpers():
    from fabric_core.utilities.data import has_iterable_dataset, has_len, pl_worker_init_function, sized_len
    from fabric_core.utilities.seed import pl_worker_init_function as from_seed

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(3))

    assert has_len(DataLoader(range(4))) and sized_len(DataLoader(range(4), batch_size=2)) == 2
    assert not has_len(DataLoader(Stream())) and sized_len(DataLoader(Stream())) is None
    assert has_iterable_dataset(DataLoader(Stream())) and not has_iterable_dataset(DataLoader(range(2)))
    with pytest.warns(UserWarning, match="returned 0 length"):
        assert has_len(DataLoader([]))
    assert pl_worker_init_function is from_seed


def test_possible_user_warnings_can_be_silenced():
    from fabric_core.utilities import disable_possible_user_warnings
    from fabric_core.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("maybe a mistake", PossibleUserWarning, stacklevel=1)
        warnings.warn("a real warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a real warning"]


def test_filesystem_and_sampler_wrapper_paths(tmp_path):
    from fabric_core.utilities.cloud_io import get_filesystem
    from fabric_core.utilities.distributed import DistributedSamplerWrapper
    from fabric_core.utilities.samplers import DistributedSamplerWrapper as Core

    fs = get_filesystem(tmp_path)
    fs.pipe(str(tmp_path / "a.txt"), b"hi")
    assert (tmp_path / "a.txt").read_bytes() == b"hi"
    assert type(get_filesystem("memory://bucket/x")).__name__ == "MemoryFileSystem"
    assert DistributedSamplerWrapper is Core


def test_convert_to_tensors():
    from fabric_core.utilities.apply_func import convert_to_tensors

    out = convert_to_tensors({"a": 1, "b": [2.5, np.float32(3)], "c": "text", "d": np.arange(3)}, "cpu")
    assert out["a"].item() == 1 and out["b"][0].item() == 2.5 and out["b"][1].item() == 3.0
    assert out["c"] == "text" and torch.equal(out["d"], torch.arange(3))


@pytest.mark.parametrize(
    "first",
    [
        "fabric_core.fabric",
        "fabric_core.plugins.precision",
        "fabric_core.plugins.environments",
        "fabric_core.plugins.io",
    ],
)
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    """The lazy Lightning names never load the registry while the import system probes a module (no cycle)."""
    import subprocess
    import sys

    code = f"import {first}; import fabric_core.fabric; from fabric_core.plugins import DoublePrecision"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_environment_detect_reads_the_process_environment_when_called_without_arguments(monkeypatch, tmp_path):
    from fabric_core.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    monkeypatch.setenv("PATH", str(tmp_path))  # no `srun` on PATH: its not-used hint is tested elsewhere
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert not SLURMEnvironment.detect()
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert SLURMEnvironment.detect()
    assert not SLURMEnvironment.detect({})  # an explicit mapping still wins
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert TorchElasticEnvironment.detect()


@pytest.mark.parametrize(
    ("nodelist", "first"),
    [("alpha beta gamma", "alpha"), ("alpha, host[5-9], gamma", "alpha"), ("1.2.3.[089, 100-110]", "1.2.3.089")],
)
def test_slurm_main_address_from_space_or_comma_separated_node_lists(monkeypatch, tmp_path, nodelist, first):
    from fabric_core.environments.slurm import SLURMEnvironment, expand_nodelist

    monkeypatch.setenv("PATH", str(tmp_path))  # no `srun` on PATH: its not-used hint is tested elsewhere
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    monkeypatch.setenv("SLURM_NODELIST", nodelist)
    assert SLURMEnvironment().main_address == first
    assert expand_nodelist("alpha beta gamma") == ["alpha", "beta", "gamma"]
