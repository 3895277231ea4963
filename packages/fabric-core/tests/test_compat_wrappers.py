"""The wrappers Fabric returns behave as Lightning Fabric 2.6's (device/dtype, forward override,
methods that bypass a strategy wrapper, step methods, sampler epochs, setting up again)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from fabric_core import Fabric
from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset


class StandIn(nn.Module):
    """A strategy wrapper in the role of DDP: forward calls the user's module (no processes needed)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


class StepModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, scale=1.0):
        return self(batch).sum() * scale

    def validation_step(self, batch):
        return self.layer(batch).sum()

    def helper(self, x):
        return self.layer(x) * 2

    def describe(self) -> str:
        return "no submodule ran"


def _behind_stand_in(fabric: Fabric, model: nn.Module) -> tuple[_FabricModule, StandIn]:
    """Set ``model`` up, then put a DDP-like wrapper between Fabric and it (as a distributed strategy would)."""
    wrapper = StandIn(model)
    fmodel = _FabricModule(wrapper, fabric.strategy, model)
    return fmodel, wrapper


# ------------------------------------------------------------------------------------ device / dtype


def test_device_and_dtype_of_a_set_up_module():
    fabric = Fabric(accelerator="cpu")
    fmodel = fabric.setup(nn.Linear(2, 2))
    assert fmodel.device == torch.device("cpu")
    assert fmodel.dtype == torch.float32


def test_dtype_follows_true_precision_and_is_none_when_mixed():
    fabric = Fabric(accelerator="cpu", precision="64-true")
    assert fabric.setup(nn.Linear(2, 2)).dtype == torch.float64
    mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).to(torch.float64))
    assert Fabric(accelerator="cpu").setup(mixed).dtype is None


def test_a_modules_own_device_attribute_is_respected():
    class WithDevice(nn.Linear):
        @property
        def device(self) -> torch.device:
            return torch.device("meta")

    assert Fabric(accelerator="cpu").setup(WithDevice(2, 2)).device == torch.device("meta")


def test_parameterless_module_reports_the_strategy_device():
    assert Fabric(accelerator="cpu").setup(nn.ReLU()).device == torch.device("cpu")


# ------------------------------------------------------------------------------------ forward override


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_assigning_forward_overrides_the_call(precision):
    fabric = Fabric(accelerator="cpu", precision=precision)
    model = nn.Linear(2, 2)
    fmodel = fabric.setup(model)
    fmodel.forward = lambda x: "overridden"
    assert fmodel(torch.ones(1, 2)) == "overridden"
    assert fmodel.forward(torch.ones(1, 2)) == "overridden"
    assert model(torch.ones(1, 2)) == "overridden"  # as in Lightning, the user's module gets it too


# ------------------------------------------------------------------------------ bypassing the wrapper


def test_method_running_submodules_behind_a_wrapper_raises_with_the_advice():
    fabric = Fabric(accelerator="cpu")
    model = StepModel()
    fmodel, _ = _behind_stand_in(fabric, model)
    with pytest.raises(RuntimeError, match=r"You are calling the method `StepModel.helper\(\)` from outside the model"):
        fmodel.helper(torch.ones(1, 2))
    with pytest.raises(RuntimeError, match=r"mark_forward_method\('helper'\)"):
        fmodel.helper(torch.ones(1, 2))
    assert fmodel.describe() == "no submodule ran"
    assert not any(m._forward_pre_hooks for m in model.modules())
    fmodel.mark_forward_method("helper")
    assert fmodel.helper(torch.ones(1, 2)).shape == (1, 1)


def test_without_a_wrapper_methods_are_the_modules_own():
    model = StepModel()
    fmodel = Fabric(accelerator="cpu").setup(model)
    assert fmodel.helper(torch.ones(1, 2)).shape == (1, 1)
    assert fmodel.training_step == model.training_step


def test_mark_forward_method_errors_as_in_lightning():
    model = StepModel()
    model.attribute = 1
    fmodel = Fabric(accelerator="cpu").setup(model)
    with pytest.raises(ValueError, match="You cannot mark the forward method itself"):
        fmodel.mark_forward_method("forward")
    with pytest.raises(AttributeError, match="`StepModel.missing` does not exist or is not a method."):
        fmodel.mark_forward_method("missing")
    with pytest.raises(AttributeError, match="`StepModel.attribute` does not exist or is not a method."):
        fmodel.mark_forward_method("attribute")
    with pytest.raises(TypeError, match="Expected a method or a string"):
        fmodel.mark_forward_method(lambda x: x)
    fmodel.mark_forward_method(model.helper)  # the bound method itself is accepted
    assert "helper" in fmodel._forward_methods


# ------------------------------------------------------------------------------------- step methods


def test_step_methods_are_routed_through_the_wrapper_without_marking():
    fabric = Fabric(accelerator="cpu")
    model = StepModel()
    fmodel, wrapper = _behind_stand_in(fabric, model)
    loss = fmodel.training_step(torch.ones(3, 2), scale=2.0)
    assert wrapper.calls == 1
    assert torch.allclose(loss, model(torch.ones(3, 2)).sum() * 2)
    fmodel.validation_step(torch.ones(3, 2))
    assert wrapper.calls == 2
    assert "forward" not in model.__dict__  # the redirection is undone
    with pytest.raises(AttributeError):
        fmodel.predict_step


def test_step_methods_keep_a_user_assigned_forward():
    fabric = Fabric(accelerator="cpu")
    model = StepModel()
    fmodel, _ = _behind_stand_in(fabric, model)
    custom = model.forward
    model.forward = custom  # an instance-level forward set by the user
    fmodel.training_step(torch.ones(1, 2))
    assert model.__dict__["forward"] is custom


def test_step_methods_run_under_the_precision_plugin():
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    seen = []

    class Probe(StepModel):
        def training_step(self, batch):
            seen.append((batch.dtype, torch.is_autocast_enabled("cpu")))
            return self(batch).sum()

    model = Probe()
    fmodel, _ = _behind_stand_in(fabric, model)
    fmodel.training_step(torch.ones(1, 2))
    assert seen == [(torch.bfloat16, True)]


# --------------------------------------------------------------------------------- sampler epochs


@pytest.mark.parametrize("batch_sampler", [False, True])
def test_set_epoch_is_called_once_per_epoch(batch_sampler):
    data = TensorDataset(torch.arange(6))
    sampler = DistributedSampler(data, num_replicas=2, rank=0)
    with mock.patch.object(sampler, "set_epoch", wraps=sampler.set_epoch) as spy:
        if batch_sampler:
            loader = DataLoader(data, batch_sampler=BatchSampler(sampler, batch_size=1, drop_last=False))
        else:
            loader = DataLoader(data, sampler=sampler)
        wrapped = _FabricDataLoader(loader)
        for _ in wrapped:
            pass
        assert spy.call_args_list == [mock.call(0)]
        for _ in wrapped:
            pass
        assert spy.call_args_list == [mock.call(0), mock.call(1)]


def test_a_dataloader_wrapper_built_without_a_strategy_still_moves_batches():
    loader = _FabricDataLoader(DataLoader(TensorDataset(torch.arange(4)), batch_size=2), device=torch.device("cpu"))
    assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3]]


# ------------------------------------------------------------------------------ models with hooks


class LightningStyle(StepModel):
    """The LightningModule contract: a ``_fabric`` attribute, ``log`` through it, hooks on the model."""

    def __init__(self) -> None:
        super().__init__()
        self._fabric = None
        self.events: list[str] = []

    def log(self, name, value):
        self._fabric.log(name, value)

    @property
    def logger(self):
        return self._fabric.logger

    def on_after_setup(self, fabric, module):
        self.events.append("setup")

    def on_train_start(self):
        self.events.append("train_start")

    def on_after_optimizer_step(self, strategy, optimizer):
        self.events.append("step")


class RecordingLogger:
    def __init__(self) -> None:
        self.metrics: list[dict] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_setup_connects_a_lightning_style_model():
    logger = RecordingLogger()
    fabric = Fabric(accelerator="cpu", loggers=logger)
    model = LightningStyle()
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert model._fabric is fabric
    assert model._fabric_optimizers == [optimizer]
    assert model.logger is logger
    model.log("loss", torch.tensor(1.5))
    assert logger.metrics[-1] == {"loss": 1.5}
    fabric.call("on_train_start")  # hooks defined on the model run
    fabric.backward(fmodel.training_step(torch.ones(2, 2)))
    optimizer.step()
    assert model.events == ["setup", "train_start", "step"]


def test_plain_modules_are_not_made_callbacks():
    fabric = Fabric(accelerator="cpu")
    model = StepModel()
    fabric.setup(model)
    assert not any(c is model for c in fabric._callbacks)
    assert "_fabric" not in model.__dict__


def test_setup_module_connects_the_model_once():
    fabric = Fabric(accelerator="cpu")
    model = LightningStyle()
    fabric.setup_module(model)
    fabric.setup_module(model)
    assert model._fabric is fabric
    assert sum(c is model for c in fabric._callbacks) == 1


# --------------------------------------------------------------------------------- setting up again


def test_same_module_and_optimizer_set_up_again_as_in_lightning():
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first = fabric.setup(model, optimizer)
    second = fabric.setup(model, optimizer)
    assert first[0] is not second[0] and second[0].module is model and second[1].optimizer is optimizer
    with pytest.raises(ValueError, match="A model should be passed only once to the `setup` method"):
        fabric.setup(second[0], optimizer)
    with pytest.raises(ValueError, match="An optimizer should be passed only once to the `setup` method"):
        fabric.setup(model, second[1])
    with pytest.raises(ValueError, match="A model should be passed only once to the `setup_module` method"):
        fabric.setup_module(second[0])
    with pytest.raises(ValueError, match="An optimizer should be passed only once to the `setup_optimizers`"):
        fabric.setup_optimizers(second[1])


def test_setup_dataloaders_and_no_backward_sync_errors_as_in_lightning():
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(ValueError, match="`setup_dataloaders` requires at least one dataloader"):
        fabric.setup_dataloaders()
    with pytest.raises(TypeError, match="Only PyTorch DataLoader are currently supported"):
        fabric.setup_dataloaders(range(3))
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.arange(2))))
    with pytest.raises(ValueError, match="A dataloader should be passed only once to the"):
        fabric.setup_dataloaders(loader)
    with pytest.raises(TypeError, match="You need to set up the model first"):
        fabric.no_backward_sync(nn.Linear(1, 1))
