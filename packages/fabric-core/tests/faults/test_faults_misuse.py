"""Mistakes users make, beyond test_misuse.py: each gives a clear error, starts no stray process, hangs nothing."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest
import torch
from fabric_core import Fabric
from fabric_core.precision.mixed import MixedPrecision
from fault_helpers import children_of, start_job, write_script
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# torch.jit (a foreign file format here, torch.compile there) warns that it is deprecated
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ----------------------------------------------------------------------------- missing __main__ guard

NO_GUARD_LAUNCH = """
import torch
from fabric_core import Fabric

def work(fabric):
    print("WORKER RAN", flush=True)

fabric = Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2)
fabric.launch(work)
print("LAUNCH RETURNED", flush=True)
"""

NO_GUARD_SUBCLASS = """
import torch
from fabric_core import Fabric

class Trainer(Fabric):
    def run(self):
        print("WORKER RAN", flush=True)
        return self.all_reduce(torch.ones(1), reduce_op="sum").item()

print("RESULT", Trainer(accelerator="cpu", strategy="ddp_spawn", devices=2).run(), flush=True)
"""


@pytest.mark.parametrize("source", [NO_GUARD_LAUNCH, NO_GUARD_SUBCLASS], ids=["launch_fn", "subclass_run"])
def test_missing_main_guard_with_spawn_fails_clearly_and_leaves_nothing(tmp_path, source):
    script = tmp_path / "train.py"
    script.write_text(source)
    job = start_job(tmp_path, [sys.executable, str(script)])
    code = job.finish(timeout=180)
    assert code != 0
    assert "__name__" in job.stderr and "__main__" in job.stderr, job.stderr[-3000:]
    assert "WORKER RAN" not in job.stdout  # no worker got as far as the user's code
    assert not job.leftovers(), "spawned workers were left running"


# ----------------------------------------------------------------------------- using Fabric before launch

BEFORE_LAUNCH = {
    "setup": lambda f, m: f.setup(m, torch.optim.SGD(m.parameters(), lr=0.1)),
    "setup_module": lambda f, m: f.setup_module(m),
    "setup_optimizers": lambda f, m: f.setup_optimizers(torch.optim.SGD(m.parameters(), lr=0.1)),
    "setup_dataloaders": lambda f, m: f.setup_dataloaders(DataLoader(TensorDataset(torch.ones(4, 2)))),
    "barrier": lambda f, m: f.barrier(),
    "all_reduce": lambda f, m: f.all_reduce(torch.ones(1)),
    "all_gather": lambda f, m: f.all_gather(torch.ones(1)),
    "broadcast": lambda f, m: f.broadcast({"a": 1}),
    "save": lambda f, m: f.save("never-written.pt", {"model": m}),
    "load": lambda f, m: f.load("never-read.pt"),
    "load_raw": lambda f, m: f.load_raw("never-read.pt", m),
    "init_module": lambda f, m: f.init_module().__enter__(),
    "init_tensor": lambda f, m: f.init_tensor().__enter__(),
    "sharded_model": lambda f, m: f.sharded_model().__enter__(),
    "rank_zero_first": lambda f, m: f.rank_zero_first().__enter__(),
}


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp", "fsdp"])
def test_every_method_needing_the_processes_refuses_before_launch(tmp_path, monkeypatch, strategy):
    monkeypatch.chdir(tmp_path)
    before = children_of(os.getpid())
    for name, call in BEFORE_LAUNCH.items():
        fabric = Fabric(accelerator="cpu", strategy=strategy, devices=2)
        with pytest.raises(RuntimeError, match=r"call fabric\.launch\(\) before"):
            call(fabric, nn.Linear(2, 1))
        assert not torch.distributed.is_initialized(), f"{name} joined a process group"
    assert children_of(os.getpid()) <= before and not multiprocessing.active_children()
    assert not list(tmp_path.iterdir()), "nothing was written"


def test_launch_twice_and_launch_with_a_non_function_are_refused():
    fabric = Fabric(accelerator="cpu")
    fabric.launch()
    with pytest.raises(RuntimeError, match="already called"):
        fabric.launch()
    with pytest.raises(TypeError, match="expects a function"):
        Fabric(accelerator="cpu").launch("train")


# ----------------------------------------------------------------------------- loss.backward() under a scaler


def _scaled_fabric(**kwargs) -> Fabric:
    precision = MixedPrecision("16-mixed", torch.bfloat16, "cpu", scaler=torch.amp.GradScaler("cpu"))
    return Fabric(accelerator="cpu", plugins=[precision], **kwargs)


class _Outputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x):
        return {"out": self.layer(x), "aux": (self.layer(x) * 2,)}

    def generate(self, x):
        return self.layer(x) + 1


PLAIN_BACKWARDS = {
    "dict output": lambda m, x: m(x)["out"].sum().backward(),
    "tensor nested in a tuple": lambda m, x: m(x)["aux"][0].sum().backward(),
    "marked forward method": lambda m, x: m.generate(x).sum().backward(),
    "torch.autograd.backward": lambda m, x: torch.autograd.backward(m(x)["out"].sum()),
}


@pytest.mark.parametrize("how", list(PLAIN_BACKWARDS))
@pytest.mark.parametrize("setup", ["setup", "setup_module"])
def test_plain_backward_is_refused_under_a_scaler_in_every_form(how, setup):
    fabric = _scaled_fabric()
    module = _Outputs()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    if setup == "setup":
        model, optimizer = fabric.setup(module, optimizer)
    else:
        model = fabric.setup_module(module)
        optimizer = fabric.setup_optimizers(optimizer)
    model.mark_forward_method("generate")
    with pytest.raises(RuntimeError, match=r"use fabric\.backward\(loss\)"):
        PLAIN_BACKWARDS[how](model, torch.ones(3, 2))
    assert all(p.grad is None for p in module.parameters()), "no unscaled gradient reached the parameters"
    fabric.backward(model(torch.ones(3, 2))["out"].sum())  # the right way still works afterwards
    optimizer.step()


PLAIN_BACKWARD_JOB = """
import sys, torch
from torch import nn
from fabric_core.precision.mixed import MixedPrecision

def work(fabric):
    module = nn.Linear(2, 1)
    model, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    fabric.barrier()
    model(torch.ones(4, 2)).sum().backward()  # the mistake, in every rank
    say("BACKWARD PASSED")

if __name__ == "__main__":
    from fabric_core import Fabric
    precision = MixedPrecision("16-mixed", torch.bfloat16, "cpu", scaler=torch.amp.GradScaler("cpu"))
    Fabric(accelerator="cpu", strategy="ddp_spawn", devices=2, plugins=[precision]).launch(work)
"""


def test_plain_backward_under_a_scaler_stops_a_two_process_job_clearly(tmp_path):
    job = start_job(tmp_path, [sys.executable, str(write_script(tmp_path, PLAIN_BACKWARD_JOB))])
    code = job.finish(timeout=180)
    assert code != 0
    assert "BACKWARD PASSED" not in job.stdout
    assert "use fabric.backward(loss)" in job.stderr
    assert "raised an exception" in job.stderr  # WorkerFailedError names the rank
    assert not job.leftovers()


# ----------------------------------------------------------------------------- setting things up twice
# As in Lightning, a single-process strategy may set up the same original module / optimizer again (a
# new wrapper around the same object; nothing is wrapped twice). A distributed strategy refuses it,
# since DDP / sharding would be applied to the same parameters twice. What Fabric returned is always
# refused.

AGAIN = {
    "setup twice": ("setup", "setup"),
    "setup_module twice": ("setup_module", "setup_module"),
    "setup after setup_module": ("setup_module", "setup"),
    "setup_module after setup": ("setup", "setup_module"),
    "compiled module after setup": ("setup", "compiled"),
    "module after its compiled form": ("compiled", "setup"),
}


def _set_up(fabric, module, how):
    if how == "setup":
        return fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))[0]
    if how == "setup_module":
        return fabric.setup_module(module)
    return fabric.setup(torch.compile(module))


@pytest.mark.parametrize("kind", list(AGAIN))
def test_the_same_module_set_up_again_on_one_device_works_as_in_lightning(kind):
    fabric = Fabric(accelerator="cpu")
    module = nn.Linear(2, 1)
    first, second = AGAIN[kind]
    a = _set_up(fabric, module, first)
    b = _set_up(fabric, module, second)
    assert a.module is b.module is module
    if "compiled" not in kind:  # (compiling is slow and adds nothing here)
        assert torch.equal(a(torch.ones(1, 2)), b(torch.ones(1, 2)))


def test_the_wrapped_module_set_up_again_is_refused():
    fabric = Fabric(accelerator="cpu")
    wrapped = fabric.setup(nn.Linear(2, 1))
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup(wrapped)
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup_module(wrapped)
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup(torch.compile(wrapped))


SET_UP_AGAIN_UNDER_DDP = """
import torch
from torch import nn
from fabric_core import Fabric

fabric = Fabric(accelerator="cpu", strategy="ddp", devices=1)
fabric.launch()
for first, second in [("setup", "setup"), ("setup_module", "setup_module"), ("setup_module", "setup"),
                      ("setup", "setup_module"), ("setup", "optimizer")]:
    module = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    fabric.setup(module, optimizer) if first == "setup" else fabric.setup_module(module)
    try:
        if second == "setup":
            fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
        elif second == "setup_module":
            fabric.setup_module(module)
        else:
            fabric.setup(nn.Linear(2, 1), optimizer)
    except ValueError as err:
        assert "already set up" in str(err) and "'ddp'" in str(err), err
        print("REFUSED", first, second, flush=True)
"""


def test_the_same_module_or_optimizer_set_up_again_under_ddp_is_refused(tmp_path):
    job = start_job(tmp_path, [sys.executable, str(write_script(tmp_path, SET_UP_AGAIN_UNDER_DDP))])
    assert job.finish(timeout=240) == 0, job.stderr[-3000:]
    assert job.stdout.count("REFUSED") == 5, job.stdout + job.stderr[-3000:]
    assert not job.leftovers()


def test_the_same_module_in_two_fabric_objects_is_allowed():
    """No global state: another Fabric object may set up the same module (e.g. evaluation)."""
    module = nn.Linear(2, 1)
    first, second = Fabric(accelerator="cpu"), Fabric(accelerator="cpu")
    a, b = first.setup(module), second.setup(module)
    assert a.module is b.module is module


def test_a_wrapped_optimizer_set_up_again_is_refused():
    fabric = Fabric(accelerator="cpu")
    module = nn.Linear(2, 1)
    _, optimizer = fabric.setup(module, torch.optim.SGD(module.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup(nn.Linear(2, 1), optimizer)
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup_optimizers(optimizer)


def test_the_same_original_optimizer_set_up_again_on_one_device_works_as_in_lightning():
    fabric = Fabric(accelerator="cpu")
    module = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    fabric.setup(module, optimizer)
    model, again = fabric.setup(module, optimizer)
    assert again.optimizer is optimizer
    fabric.backward(model(torch.ones(1, 2)).sum())
    again.step()


def test_a_dataloader_set_up_twice_says_so():
    fabric = Fabric(accelerator="cpu")
    loader = fabric.setup_dataloaders(DataLoader(TensorDataset(torch.ones(4, 2)), batch_size=2))
    with pytest.raises(ValueError, match="already set up"):
        fabric.setup_dataloaders(loader)
