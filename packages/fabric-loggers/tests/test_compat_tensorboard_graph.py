"""``log_graph`` skips, with Lightning's warning, an example input that TensorBoard cannot trace (a dict)."""

from __future__ import annotations

import os

import pytest
import torch
from fabric_loggers import TensorBoardLogger
from torch import nn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_an_untraceable_example_input_warns_and_writes_nothing(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    model = _Net()
    model.example_input_array = {"x": torch.ones(1, 4)}
    with pytest.warns(UserWarning, match="can't be traced by TensorBoard. Make the input array a tuple"):
        logger.log_graph(model)
    assert not os.path.exists(logger.log_dir) or os.listdir(logger.log_dir) == []
    with pytest.warns(UserWarning, match="The `model.example_input_array` attribute is not set"):
        logger.log_graph(_Net())


def test_a_tuple_of_positional_inputs_is_traced(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_graph(_Net(), (torch.ones(1, 4),))
    logger.finalize("success")
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(logger.log_dir))
