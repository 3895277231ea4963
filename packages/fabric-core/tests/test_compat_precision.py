"""Precision behaves as in Lightning Fabric 2.6 on the CPU (16-mixed fallback, input dtypes, 64-true)."""

from __future__ import annotations

import warnings

import pytest
import torch
from fabric_core import Fabric
from torch import nn


class Probe(nn.Module):
    """Records the dtypes its forward sees and the default dtype in effect there."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.seen: list[tuple] = []

    def forward(self, x, index=None):
        self.seen.append((x.dtype, None if index is None else index.dtype, torch.get_default_dtype()))
        return self.layer(x)


def test_sixteen_mixed_on_cpu_warns_and_trains_in_bf16_mixed():
    with pytest.warns(UserWarning, match="Using precision='bf16-mixed' instead"):
        fabric = Fabric(accelerator="cpu", precision="16-mixed")
    assert fabric.strategy.precision.name == "bf16-mixed"
    model = Probe()
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.layer.weight.detach().clone()
    out = fmodel(torch.ones(3, 2))
    fabric.backward(out.sum())
    optimizer.step()
    assert out.dtype == torch.float32
    assert model.layer.weight.dtype == torch.float32
    assert not torch.equal(before, model.layer.weight)


def test_the_sixteen_alias_also_falls_back_on_cpu():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fabric = Fabric(accelerator="cpu", precision=16)
    assert fabric.strategy.precision.name == "bf16-mixed"
    assert any("bf16-mixed" in str(w.message) for w in caught)


def test_bf16_mixed_inputs_reach_forward_in_bfloat16():
    fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
    model = Probe()
    fmodel = fabric.setup(model)
    out = fmodel(torch.ones(1, 2, dtype=torch.float64), index=torch.tensor([1]))
    assert model.seen == [(torch.bfloat16, torch.int64, torch.float32)]  # integers are left alone
    assert out.dtype == torch.float32


def test_sixty_four_true_keeps_complex_and_integer_buffers():
    class WithBuffers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2)
            self.register_buffer("phase", torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128))
            self.register_buffer("spectrum", torch.tensor([0.5 + 0.5j], dtype=torch.complex64))
            self.register_buffer("count", torch.tensor([3]))

        def forward(self, x):
            return self.layer(x) * self.phase.abs().sum()

    module = WithBuffers()
    fmodel = Fabric(accelerator="cpu", precision="64-true").setup(module)
    assert module.layer.weight.dtype == torch.float64
    assert module.phase.dtype == torch.complex128
    assert torch.equal(module.phase, torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex128))  # imaginary part kept
    assert module.spectrum.dtype == torch.complex64
    assert module.count.dtype == torch.int64
    assert fmodel(torch.ones(1, 2)).dtype == torch.float32


@pytest.mark.parametrize(("precision", "dtype"), [("64-true", torch.float64), ("bf16-true", torch.bfloat16)])
def test_true_precisions_create_tensors_in_their_dtype_during_forward(precision, dtype):
    model = Probe()
    fmodel = Fabric(accelerator="cpu", precision=precision).setup(model)
    fmodel(torch.ones(1, 2))
    assert model.seen == [(dtype, None, dtype)]
    assert torch.get_default_dtype() == torch.float32  # restored afterwards


def test_lightning_precision_classes_and_their_constructors():
    from fabric_core.plugins import DoublePrecision, HalfPrecision, MixedPrecision
    from fabric_core.plugins.precision import MixedPrecision as SameClass

    assert SameClass is MixedPrecision
    sixteen = MixedPrecision("16-mixed", "cpu")
    assert isinstance(sixteen.scaler, torch.amp.GradScaler)  # created when not given, as in Lightning
    assert (sixteen.precision, sixteen.device, sixteen.dtype) == ("16-mixed", "cpu", torch.float16)
    bf16 = MixedPrecision(precision="bf16-mixed", device="cuda:0")
    assert bf16.scaler is None and bf16.device == "cuda"
    with pytest.raises(ValueError, match="`precision='bf16-mixed'` does not use a scaler"):
        MixedPrecision("bf16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match=r"Passed `MixedPrecision\(precision='bf16'\)`"):
        MixedPrecision("bf16", "cpu")
    assert HalfPrecision().dtype == torch.float16 and HalfPrecision("bf16-true").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="Precision must be '16-true' or 'bf16-true'"):
        HalfPrecision("32-true")
    assert DoublePrecision().precision == "64-true"
    assert isinstance(Fabric(accelerator="cpu", precision="64-true").strategy.precision, DoublePrecision)
    assert isinstance(Fabric(accelerator="cpu", precision="bf16-true").strategy.precision, HalfPrecision)


def test_a_lightning_style_plugin_trains_under_fabric():
    from fabric_core.plugins import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # (the default 65536 overflows float16 at once)
    fabric = Fabric(accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    model = Probe()
    fmodel, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    before = model.layer.weight.detach().clone()
    fabric.backward(fmodel(torch.ones(2, 2)).sum())
    optimizer.step()
    assert model.seen[0][0] == torch.float16  # inputs cast to the autocast dtype
    assert not torch.equal(before, model.layer.weight)  # the scaled step was taken
