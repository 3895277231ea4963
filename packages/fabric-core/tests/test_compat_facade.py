"""The Fabric facade's signature and checkpoint filters behave as in Lightning Fabric 2.6."""

from __future__ import annotations

import inspect

import pytest
import torch
from fabric_core import Fabric
from torch import nn


def test_constructor_takes_keywords_only():
    with pytest.raises(TypeError):
        Fabric("cpu")  # type: ignore[misc]
    parameters = inspect.signature(Fabric.__init__).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in parameters.items() if name != "self")


def test_constructor_and_collectives_are_typed_with_real_unions():
    parameters = inspect.signature(Fabric.__init__).parameters
    expected = {
        "accelerator": "Accelerator",
        "strategy": "Strategy",
        "devices": "list[int]",
        "precision": "str | int",
        "plugins": "list[",
        "callbacks": "list[object]",
        "loggers": "Logger",
    }
    for name, fragment in expected.items():
        annotation = str(parameters[name].annotation)
        assert fragment in annotation and "Any" not in annotation, (name, annotation)
    assert "ReduceOp" in str(inspect.signature(Fabric.all_reduce).parameters["reduce_op"].annotation)


def _model_and_state() -> tuple[nn.Module, dict]:
    model = nn.Linear(2, 1)
    return model, {"model": model, "step": 5, "notes": {"a": 1, "b": "x"}, "flag": True}


def test_a_filter_on_a_non_dict_entry_keeps_the_value(tmp_path):
    fabric = Fabric(accelerator="cpu")
    _, state = _model_and_state()
    fabric.save(tmp_path / "c.pt", state, filter={"step": lambda k, v: False, "flag": lambda k, v: False})
    loaded = fabric.load(tmp_path / "c.pt")
    assert loaded["step"] == 5 and loaded["flag"] is True
    assert set(loaded["model"]) == {"weight", "bias"}


def test_filters_select_items_and_drop_entries_left_empty(tmp_path):
    fabric = Fabric(accelerator="cpu")
    model, state = _model_and_state()
    fabric.save(
        tmp_path / "c.pt",
        state,
        filter={"model": lambda k, v: k == "weight", "notes": lambda k, v: False},
    )
    loaded = fabric.load(tmp_path / "c.pt")
    assert list(loaded["model"]) == ["weight"]
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    assert "notes" not in loaded  # everything in it was filtered out, as in Lightning
    assert loaded["step"] == 5


def test_invalid_filters_are_refused_before_anything_is_written(tmp_path):
    fabric = Fabric(accelerator="cpu")
    _, state = _model_and_state()
    target = tmp_path / "c.pt"
    with pytest.raises(TypeError, match="should be a dictionary"):
        fabric.save(target, state, filter=lambda k, v: True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="to be a callable, given 'x'"):
        fabric.save(target, state, filter={"model": "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="keys {'other'} are not present in the state keys"):
        fabric.save(target, state, filter={"other": lambda k, v: True})
    assert not target.exists()
