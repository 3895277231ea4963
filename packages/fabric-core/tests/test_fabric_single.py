"""Fabric in one process on CPU: set-up, wrappers, training step, helpers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from fabric_core import Fabric, is_wrapped, seed_everything
from fabric_core.plugins.logger import Logger
from fabric_core.wrappers import _FabricDataLoader, _FabricModule, _FabricOptimizer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)
        self.scale = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def generate(self, x: torch.Tensor, steps: int = 2) -> torch.Tensor:
        for _ in range(steps):
            x = torch.cat([self.layer(x), x[:, 3:]], dim=1)
        return x


class MemoryLogger(Logger):
    """A real Logger implementation that keeps what it receives."""

    def __init__(self) -> None:
        self.records: list[tuple[dict[str, float], int]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.records.append((dict(metrics), step))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def test_setup_returns_wrappers_in_order():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    opt1, opt2 = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.Adam(model.parameters())
    fmodel, fopt1, fopt2 = fabric.setup(model, opt1, opt2)
    assert isinstance(fmodel, _FabricModule) and fmodel.module is model
    assert isinstance(fopt1, torch.optim.SGD) and isinstance(fopt1, _FabricOptimizer)
    assert isinstance(fopt2, torch.optim.Adam) and fopt2.optimizer is opt2
    assert all(is_wrapped(o) for o in (fmodel, fopt1, fopt2)) and not is_wrapped(model)
    assert fopt1.param_groups is opt1.param_groups


def test_state_dict_keys_are_unprefixed_and_attributes_pass_through():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    fmodel = fabric.setup(model)
    assert list(fmodel.state_dict()) == ["layer.weight", "layer.bias"]
    assert [n for n, _ in fmodel.named_parameters()] == ["layer.weight", "layer.bias"]
    assert fmodel.scale == 2.0
    fmodel.scale = 3.0
    assert model.scale == 3.0
    fmodel.load_state_dict(Net().state_dict())


def test_training_step_changes_weights_like_raw_pytorch():
    seed_everything(1)
    raw, x = Net(), torch.randn(8, 4)
    fabric_model = Net()
    fabric_model.load_state_dict(raw.state_dict())
    raw_opt = torch.optim.SGD(raw.parameters(), lr=0.1)
    raw_opt.zero_grad()
    raw(x).pow(2).mean().backward()
    raw_opt.step()

    fabric = Fabric(accelerator="cpu")
    fmodel, fopt = fabric.setup(fabric_model, torch.optim.SGD(fabric_model.parameters(), lr=0.1))
    fopt.zero_grad()
    fabric.backward(fmodel(x).pow(2).mean())
    fopt.step()
    for a, b in zip(raw.parameters(), fabric_model.parameters()):
        assert torch.equal(a, b)


def test_lr_scheduler_on_the_wrapped_optimizer_changes_the_real_learning_rate():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=1.0))
    scheduler = torch.optim.lr_scheduler.StepLR(fopt, step_size=1, gamma=0.5)
    fabric.backward(fmodel(torch.randn(2, 4)).sum())
    fopt.step()
    scheduler.step()
    assert fopt.optimizer.param_groups[0]["lr"] == 0.5


def test_setting_up_a_wrapped_object_again_is_refused():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    fmodel = fabric.setup(model)
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup(fmodel)
    opt = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup_optimizers(opt)


def test_setup_rejects_wrong_types():
    fabric = Fabric(accelerator="cpu")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fabric.setup("model")
    with pytest.raises(TypeError, match="Optimizer"):
        fabric.setup(Net(), "optimizer")


def test_setup_module_then_optimizers():
    fabric = Fabric(accelerator="cpu")
    fmodel = fabric.setup_module(Net())
    fopt = fabric.setup_optimizers(torch.optim.SGD(fmodel.parameters(), lr=0.1))
    assert isinstance(fopt, torch.optim.SGD)


def test_dataloader_wrapper_keeps_batches_and_length():
    fabric = Fabric(accelerator="cpu")
    data = TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
    loader = fabric.setup_dataloaders(DataLoader(data, batch_size=4))
    assert isinstance(loader, _FabricDataLoader) and len(loader) == 3
    batches = list(loader)
    assert torch.equal(batches[0][1], torch.arange(4))
    assert loader.batch_size == 4
    first, second = fabric.setup_dataloaders(DataLoader(data), DataLoader(data))
    assert isinstance(first, _FabricDataLoader) and isinstance(second, _FabricDataLoader)


def test_dataloader_wrapper_moves_batches_through_the_strategy():
    loader = DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2)
    moved = []

    class Recording:
        def process_dataloader(self, dataloader, device):
            return None

        def batch_to_device(self, batch, device):
            moved.append(device)
            return batch

    wrapper = _FabricDataLoader(loader, device=torch.device("meta"), strategy=Recording())
    assert len(list(wrapper)) == 2 and moved == [torch.device("meta")] * 2


def test_to_device_handles_modules_and_nested_collections():
    fabric = Fabric(accelerator="cpu")
    batch = {"x": torch.ones(2), "y": [torch.zeros(1), (torch.ones(1), "label")], "n": 3}
    moved = fabric.to_device(batch)
    assert moved["y"][1][1] == "label" and moved["n"] == 3
    assert moved["x"].device.type == "cpu"
    module = Net()
    assert fabric.to_device(module) is module


def test_print_only_on_rank_zero(capsys):
    fabric = Fabric(accelerator="cpu")
    fabric.print("hello", 1)
    assert capsys.readouterr().out == "hello 1\n"


def test_bf16_mixed_autocasts_forward_and_returns_float32_outputs():
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    fmodel = fabric.setup(Net())
    out = fmodel(torch.randn(2, 4))
    assert out.dtype == torch.float32
    assert fmodel.module.layer.weight.dtype == torch.float32
    with fabric.autocast():
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16-true", torch.bfloat16), ("64-true", torch.float64), ("16-true", torch.float16)]
)
def test_true_precisions_store_weights_in_the_dtype(precision, dtype):
    fabric = Fabric(accelerator="cpu", precision=precision)
    fmodel = fabric.setup(Net())
    assert fmodel.module.layer.weight.dtype == dtype
    assert fmodel(torch.randn(2, 4)).dtype == torch.float32
    with fabric.init_module():
        created = nn.Linear(2, 2)
    assert created.weight.dtype == dtype
    with fabric.init_tensor():
        assert torch.empty(2).dtype == dtype
    assert torch.empty(2).dtype == torch.float32


def test_init_module_empty_init_skips_initialisation():
    fabric = Fabric(accelerator="cpu")
    torch.manual_seed(0)
    with fabric.init_module(empty_init=True):
        skipped = nn.Linear(64, 64)
    torch.manual_seed(0)
    normal = nn.Linear(64, 64)
    assert not torch.equal(skipped.weight, normal.weight)
    torch.manual_seed(0)
    with fabric.init_module(empty_init=False):
        initialised = nn.Linear(64, 64)
    assert torch.equal(initialised.weight, normal.weight)


def test_seed_everything_reproduces_random_numbers():
    import random

    import numpy as np

    assert seed_everything(42) == 42
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    Fabric.seed_everything(42)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    with pytest.raises(ValueError, match="between"):
        seed_everything(-1)


def test_call_invokes_callbacks_that_define_the_hook():
    calls = []

    class A:
        def on_epoch_end(self, value):
            calls.append(("A", value))

    class B:
        pass

    fabric = Fabric(accelerator="cpu", callbacks=[A(), B()])
    fabric.call("on_epoch_end", value=3)
    fabric.call("missing_hook")
    assert calls == [("A", 3)]


def test_log_converts_tensors_and_passes_the_step_through():
    logger = MemoryLogger()
    fabric = Fabric(accelerator="cpu", loggers=logger)
    assert fabric.logger is logger and fabric.loggers == [logger]
    loss = torch.tensor(0.5, requires_grad=True) * 2
    fabric.log("loss", loss)
    fabric.log_dict({"a": 1, "b": torch.tensor(2.0)})
    fabric.log("c", 3.0, step=10)
    fabric.log("d", 4.0)
    # as in Lightning, no step given means step=None: each logger counts its own steps
    assert logger.records == [({"loss": 1.0}, None), ({"a": 1, "b": 2.0}, None), ({"c": 3.0}, 10), ({"d": 4.0}, None)]
    assert isinstance(logger.records[0][0]["loss"], float)
    with pytest.raises(ValueError, match="scalar"):
        fabric.log("vector", torch.ones(3))


def test_invalid_logger_is_rejected():
    from fabric_core.errors import MisconfigurationError

    with pytest.raises(MisconfigurationError, match="Logger"):
        Fabric(loggers=[object()])
    # names are resolved through the fabric_core.loggers entry points; an unknown one lists the valid ones
    with pytest.raises(MisconfigurationError, match="Unknown logger 'no_such_logger'; valid names"):
        Fabric(loggers=["no_such_logger"])


def test_mark_forward_method_routes_through_the_wrapper():
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    fmodel = fabric.setup(Net())
    x = torch.randn(2, 4)
    fmodel.mark_forward_method("generate")
    out = fmodel.generate(x, steps=1)
    assert out.dtype == torch.float32  # went through the precision plugin's output conversion
    assert fmodel.forward(x).shape == (2, 3)  # forward is restored afterwards
    assert "forward" not in fmodel.module.__dict__
    with pytest.raises(AttributeError):
        fmodel.mark_forward_method("no_such_method")
    with pytest.raises(ValueError):
        fmodel.mark_forward_method("forward")


@pytest.mark.parametrize("when", ["before", "after"])
def test_torch_compile_before_or_after_setup(when):
    fabric = Fabric(accelerator="cpu")
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if when == "before":
        fmodel, fopt = fabric.setup(torch.compile(model, backend="eager"), opt)
        assert fmodel.module is model
        assert list(fmodel.state_dict()) == ["layer.weight", "layer.bias"]
    else:
        fmodel, fopt = fabric.setup(model, opt)
        fmodel = torch.compile(fmodel, backend="eager")
    before = model.layer.weight.clone()
    fabric.backward(fmodel(torch.randn(4, 4)).sum())
    fopt.step()
    assert not torch.equal(before, model.layer.weight)
    assert is_wrapped(fmodel)


def test_no_backward_sync_is_a_silent_no_op_on_one_device(recwarn):
    fabric = Fabric(accelerator="cpu")
    fmodel = fabric.setup(Net())
    with fabric.no_backward_sync(fmodel):
        fabric.backward(fmodel(torch.randn(2, 4)).sum())
    assert fmodel.module.layer.weight.grad is not None
    assert not [w for w in recwarn if "no_backward_sync" in str(w.message)]
    with pytest.raises(TypeError):
        fabric.no_backward_sync(Net())


def test_clip_gradients_by_norm_and_value():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(fmodel(torch.randn(8, 4) * 100).sum())
    norm = fabric.clip_gradients(fmodel, fopt, max_norm=1.0)
    assert norm > 1.0
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert total == pytest.approx(1.0, rel=1e-4)
    fabric.clip_gradients(fmodel, fopt, clip_val=0.01)
    assert all(p.grad.abs().max() <= 0.01 for p in model.parameters())
    with pytest.raises(ValueError, match="exactly one"):
        fabric.clip_gradients(fmodel, fopt)


def test_collectives_in_one_process():
    fabric = Fabric(accelerator="cpu")
    assert fabric.all_gather(torch.tensor([1, 2])).shape == (2,)  # unchanged with one process, as in Lightning
    gathered = fabric.all_gather({"a": 1, "b": [torch.ones(2)]})
    assert gathered["a"].shape == () and gathered["b"][0].shape == (2,)
    assert fabric.all_reduce(torch.tensor(3.0)) == 3.0
    assert fabric.broadcast({"k": 1}) == {"k": 1}
    fabric.barrier()
    with pytest.raises(ValueError, match="sum, mean, max, min"):
        fabric.all_reduce(torch.tensor(1.0), reduce_op="median")
    with fabric.rank_zero_first():
        pass


def test_rank_properties_in_one_process():
    fabric = Fabric(accelerator="cpu")
    assert (fabric.global_rank, fabric.local_rank, fabric.node_rank, fabric.world_size) == (0, 0, 0, 1)
    assert fabric.is_global_zero and fabric.device == torch.device("cpu")


def test_launch_function_returns_its_result_and_launch_twice_is_refused():
    fabric = Fabric(accelerator="cpu")
    assert fabric.launch(lambda f, x: (f.world_size, x), 5) == (1, 5)
    with pytest.raises(RuntimeError, match="already called"):
        fabric.launch()


def test_subclass_run_style():
    class MyFabric(Fabric):
        def run(self, value: int) -> int:
            model = self.setup(Net())
            return value + model(torch.ones(1, 4)).shape[1]

    assert MyFabric(accelerator="cpu").run(1) == 4


def _scaled_precision():
    from fabric_core.precision.mixed import MixedPrecision

    return MixedPrecision("16-mixed", torch.bfloat16, "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true", "64-true", "scaler"])
def test_clip_gradients_under_every_precision(precision):
    plugins = [_scaled_precision()] if precision == "scaler" else None
    fabric = Fabric(accelerator="cpu", precision="32-true" if plugins else precision, plugins=plugins)
    model = Net()
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(fmodel(torch.randn(8, 4) * 50).sum())
    norm = fabric.clip_gradients(fmodel, fopt, max_norm=0.5)
    assert float(norm) > 0.5
    total = torch.linalg.vector_norm(torch.stack([p.grad.float().norm() for p in model.parameters()]))
    # with a scaler the gradients were unscaled first, so the clipped norm is in real units
    assert float(total) == pytest.approx(0.5, rel=2e-2)
    fopt.step()  # the scaler knows the gradients are already unscaled
    if precision == "scaler":
        assert fabric.strategy.precision.scaler.get_scale() == 1024.0


def test_scaler_state_is_saved_and_restored_with_the_checkpoint(tmp_path):
    fabric = Fabric(accelerator="cpu", plugins=[_scaled_precision()])
    model = Net()
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    fabric.backward(fmodel(torch.randn(2, 4)).sum() * float("inf"))
    fopt.step()  # overflow: the step is skipped and the scale halves
    assert fabric.strategy.precision.skipped_steps == 1
    fabric.save(tmp_path / "c.pt", {"model": fmodel})
    other = Fabric(accelerator="cpu", plugins=[_scaled_precision()])
    assert other.load(tmp_path / "c.pt", {"model": other.setup(Net())}) == {}
    assert other.strategy.precision.scaler.get_scale() == 512.0


def test_sharded_model_is_the_reference_name_of_init_module():
    fabric = Fabric(accelerator="cpu", precision="bf16-true")
    with pytest.deprecated_call(match="init_module"), fabric.sharded_model():
        layer = nn.Linear(2, 2)
    assert layer.weight.dtype == torch.bfloat16


def test_two_fabrics_in_one_process_do_not_interfere():
    first = Fabric(accelerator="cpu", precision="bf16-true")
    second = Fabric(accelerator="cpu", precision="64-true")
    a, b = first.setup(Net()), second.setup(Net())
    assert a.module.layer.weight.dtype == torch.bfloat16 and b.module.layer.weight.dtype == torch.float64
    assert a(torch.ones(1, 4)).dtype == b(torch.ones(1, 4)).dtype == torch.float32
    assert first.strategy is not second.strategy and first.strategy.precision is not second.strategy.precision


def test_wrapped_optimizer_follows_load_state_dict():
    fabric = Fabric(accelerator="cpu")
    model = Net()
    fmodel, fopt = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    state = fopt.state_dict()
    state["param_groups"][0]["lr"] = 0.5
    fopt.load_state_dict(state)
    assert fopt.param_groups[0]["lr"] == fopt.optimizer.param_groups[0]["lr"] == 0.5
    scheduler = torch.optim.lr_scheduler.StepLR(fopt, step_size=1, gamma=0.1)
    fabric.backward(fmodel(torch.randn(2, 4)).sum())
    fopt.step()
    scheduler.step()
    assert fopt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_strategy_hooks_for_one_process_driving_all_devices_and_dataloader_processing():
    from fabric_core.strategies.single_device import SingleDeviceStrategy

    class AllDevices(SingleDeviceStrategy):
        one_process_drives_all_devices = True

        def process_dataloader(self, dataloader, device):
            return ([x * 10 for x in batch] for batch in dataloader)

    fabric = Fabric(accelerator="cpu", strategy=AllDevices(), devices=2)
    assert fabric.world_size == 1
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2))
    loader.__dict__["_device"] = torch.device("cpu")  # as on an accelerator: the strategy's loader is used
    assert [b[0].tolist() for b in loader] == [[[10.0], [10.0]]]


def test_hooks_on_the_wrapper_still_run():
    fabric = Fabric(accelerator="cpu")
    fmodel = fabric.setup(Net())
    seen = []
    handle = fmodel.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    fmodel(torch.ones(2, 4))
    handle.remove()
    fmodel(torch.ones(2, 4))
    assert seen == [torch.Size([2, 3])]
