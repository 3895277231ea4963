"""Seeding behaves as Lightning Fabric 2.6's does (names, environment variables, errors, log record)."""

from __future__ import annotations

import logging
import os
import random
import warnings

import numpy as np
import pytest
import torch
from fabric_core import Fabric, seed_everything
from fabric_core.utilities.seed import pl_worker_init_function, reset_seed, worker_init_function
from torch.utils.data import DataLoader, TensorDataset


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_signature_defaults_and_both_variable_names_written():
    assert seed_everything(7) == 7
    assert os.environ["FABRIC_GLOBAL_SEED"] == os.environ["PL_GLOBAL_SEED"] == "7"
    assert os.environ["FABRIC_SEED_WORKERS"] == os.environ["PL_SEED_WORKERS"] == "0"  # workers=False by default
    seed_everything(8, workers=True)
    assert os.environ["FABRIC_SEED_WORKERS"] == os.environ["PL_SEED_WORKERS"] == "1"


def test_lightning_variable_is_read_when_no_seed_is_given(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "2020")
    assert seed_everything() == 2020
    assert os.environ["FABRIC_GLOBAL_SEED"] == "2020"


def test_fabric_variable_wins_over_lightning_variable(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")
    monkeypatch.setenv("FABRIC_GLOBAL_SEED", "2")
    assert seed_everything() == 2


def test_invalid_seed_in_the_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "abc")
    with pytest.raises(ValueError, match="Invalid seed"):
        seed_everything()


@pytest.mark.parametrize("seed", [10e9, -10e9, 2**32, -1, float("inf")])
def test_out_of_bounds_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="not in bounds"):
        seed_everything(seed)


def test_float_seed_in_bounds_is_cast_as_lightning_does():
    assert seed_everything(3.0) == 3


def test_no_seed_warns_once_then_reuses_the_recorded_seed():
    with pytest.warns(UserWarning, match="No seed found"):
        assert seed_everything() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert seed_everything() == 0  # now recorded in the environment: no warning


def test_verbose_false_neither_warns_nor_logs(caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO):
            seed_everything(verbose=False)
    assert not [r for r in caplog.records if "Seed set" in r.getMessage()]


def test_seed_set_log_record_on_rank_zero_only(caplog, monkeypatch):
    with caplog.at_level(logging.INFO):
        seed_everything(123)
    assert [r.getMessage() for r in caplog.records if "Seed set" in r.getMessage()] == ["Seed set to 123"]
    caplog.clear()
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level(logging.INFO):
        seed_everything(123)
    assert not [r for r in caplog.records if "Seed set" in r.getMessage()]


@pytest.mark.parametrize("workers", [True, False])
def test_reset_seed_restores_the_streams_and_the_worker_flag(workers, caplog):
    seed_everything(123, workers=workers)
    first = _draw()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reset_seed()
    assert _draw() == first
    assert os.environ["PL_SEED_WORKERS"] == str(int(workers))
    assert not caplog.records  # reset_seed is quiet


def test_reset_seed_without_seed_everything_does_nothing():
    state = torch.get_rng_state()
    reset_seed()
    assert torch.equal(torch.get_rng_state(), state)
    assert "PL_GLOBAL_SEED" not in os.environ and "FABRIC_GLOBAL_SEED" not in os.environ


def test_fabric_seed_everything_seeds_workers_by_default_and_loaders_get_the_init_function():
    Fabric.seed_everything(3)
    assert os.environ["PL_SEED_WORKERS"] == "1"
    fabric = Fabric(accelerator="cpu")
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.arange(4.0)), num_workers=0))
    assert loader.worker_init_fn.func is pl_worker_init_function is worker_init_function
    assert loader.worker_init_fn.keywords == {"rank": 0}


def test_a_users_worker_init_function_is_kept():
    def mine(worker_id: int) -> None:
        pass

    Fabric.seed_everything(3, workers=True)
    loader = Fabric(accelerator="cpu").setup_dataloaders(
        DataLoader(TensorDataset(torch.arange(4.0)), worker_init_fn=mine)
    )
    assert loader.worker_init_fn is mine


def test_without_worker_seeding_no_init_function_is_installed():
    Fabric.seed_everything(3, workers=False)
    loader = Fabric(accelerator="cpu").setup_dataloaders(DataLoader(TensorDataset(torch.arange(4.0))))
    assert loader.worker_init_fn is None


def test_worker_init_function_gives_workers_and_ranks_distinct_reproducible_streams():
    def streams(worker_id: int, rank: int) -> tuple[float, float, float]:
        torch.manual_seed(1000 + worker_id)  # what torch does in a worker: base seed + worker id
        worker_init_function(worker_id, rank=rank)
        return _draw()

    a, b, c = streams(0, 0), streams(1, 0), streams(0, 1)
    assert len({a, b, c}) == 3
    assert streams(1, 0) == b


def test_workers_draw_different_numbers_across_ranks_in_real_worker_processes():
    """Two "ranks" of one seeded job: their workers' torch streams differ, and repeat on a second run."""

    class Draw(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(1)

    def run(rank: int) -> list[float]:
        seed_everything(42, workers=True)
        loader = DataLoader(Draw(), num_workers=1, batch_size=1)
        import functools

        loader.worker_init_fn = functools.partial(worker_init_function, rank=rank)
        return [float(b) for b in loader]

    rank0, rank1 = run(0), run(1)
    assert rank0 != rank1
    assert run(0) == rank0
