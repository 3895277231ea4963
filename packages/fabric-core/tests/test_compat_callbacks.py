"""Callbacks behave as in Lightning Fabric 2.6: keyword filtering, special hooks, entry-point callbacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fabric_core import Fabric
from torch import nn


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []


def test_call_passes_each_hook_only_the_keywords_it_declares():
    class Narrow(Recorder):
        def on_epoch_end(self, loss):
            self.calls.append(("narrow", loss))

    class Wide(Recorder):
        def on_epoch_end(self, loss, epoch, **rest):
            self.calls.append(("wide", loss, epoch, rest))

    class Positional(Recorder):
        def on_epoch_end(self, *args):
            self.calls.append(("positional", args))

    narrow, wide, positional = Narrow(), Wide(), Positional()
    fabric = Fabric(accelerator="cpu", callbacks=[narrow, wide, positional])
    fabric.call("on_epoch_end", loss=1.0, epoch=3, extra="x")
    assert narrow.calls == [("narrow", 1.0)]
    assert wide.calls == [("wide", 1.0, 3, {"extra": "x"})]
    assert positional.calls == [("positional", ())]
    fabric.call("on_epoch_end", 2.0, epoch=4)  # positional arguments are passed as they are
    assert narrow.calls[-1] == ("narrow", 2.0)
    assert wide.calls[-1] == ("wide", 2.0, 4, {})
    assert positional.calls[-1] == ("positional", (2.0,))


def test_a_hook_whose_signature_cannot_be_read_gets_every_keyword():
    seen = {}

    class WithBuiltin:
        on_epoch_end = staticmethod(seen.update)  # a builtin method: no inspectable signature needed

    Fabric(accelerator="cpu", callbacks=WithBuiltin()).call("on_epoch_end", a=1)
    assert seen == {"a": 1}


def test_a_non_callable_attribute_warns_and_is_skipped():
    class Odd:
        on_epoch_end = 5

    later = Recorder()
    later.on_epoch_end = lambda: later.calls.append("ran")  # type: ignore[attr-defined]
    fabric = Fabric(accelerator="cpu", callbacks=[Odd(), later])
    with pytest.warns(UserWarning, match="Skipping the callback `Odd.on_epoch_end`"):
        fabric.call("on_epoch_end")
    assert later.calls == ["ran"]


def test_single_callback_and_list_inputs():
    one = Recorder()
    assert Fabric(accelerator="cpu", callbacks=one)._callbacks == [one]
    assert Fabric(accelerator="cpu", callbacks=[one, one])._callbacks == [one, one]
    assert Fabric(accelerator="cpu")._callbacks == []


def test_special_hooks_after_setup_and_after_optimizer_step():
    class Special(Recorder):
        def on_after_setup(self, fabric, module):
            self.calls.append(("setup", fabric, module))

        def on_after_optimizer_step(self, strategy, optimizer):
            self.calls.append(("step", strategy, optimizer))

    callback = Special()
    fabric = Fabric(accelerator="cpu", callbacks=[callback])
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fmodel, foptimizer = fabric.setup(model, optimizer)
    assert callback.calls == [("setup", fabric, fmodel)]
    fabric.backward(fmodel(torch.ones(1, 2)).sum())
    foptimizer.step()
    assert callback.calls[-1] == ("step", fabric.strategy, optimizer)  # the user's optimizer, as in Lightning


def test_without_callbacks_the_optimizer_step_is_the_optimizers_own():
    """The no-callback path costs nothing: step is the user's optimizer's bound method, no wrapper loop."""
    fabric = Fabric(accelerator="cpu")
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _, foptimizer = fabric.setup(model, optimizer)
    assert foptimizer.step == optimizer.step
    with_hook = Fabric(
        accelerator="cpu", callbacks=[type("C", (), {"on_after_optimizer_step": lambda *a, **k: None})()]
    )
    _, hooked = with_hook.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert hooked.step != hooked.optimizer.step


ENTRY_POINT_SCRIPT = """
import json
from fabric_core import Fabric

fabric = Fabric(accelerator="cpu")
fabric.call("on_start", value=7)
import extra_callbacks
print(json.dumps({"names": [type(c).__name__ for c in fabric._callbacks], "seen": extra_callbacks.SEEN}))
"""


def _install_fake_distribution(site: Path) -> None:
    """A real (if tiny) installed distribution whose entry points register callback factories."""
    (site / "extra_callbacks.py").write_text(
        textwrap.dedent(
            """
            SEEN = []

            class One:
                def on_start(self, value):
                    SEEN.append(("one", value))

            class Two:
                def on_start(self):
                    SEEN.append(("two",))

            def single():
                return One()

            def several():
                return [Two(), Two()]
            """
        )
    )
    dist_info = site / "extra_callbacks-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-callbacks\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[fabric_core.callbacks]\nsingle = extra_callbacks:single\nseveral = extra_callbacks:several\n"
    )


def test_callbacks_registered_through_the_entry_point_group_are_loaded(tmp_path, script_runner):
    import json
    import os

    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site)
    env = {"PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = script_runner(ENTRY_POINT_SCRIPT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(out["names"]) == ["One", "Two", "Two"]
    assert sorted(map(tuple, out["seen"])) == [("one", 7), ("two",), ("two",)]


def test_no_entry_point_callbacks_without_such_a_package():
    assert (
        subprocess.run(
            [sys.executable, "-c", "from fabric_core import Fabric; assert Fabric(accelerator='cpu')._callbacks == []"],
            timeout=300,
        ).returncode
        == 0
    )
