"""Every constructor argument and combination: a working Fabric, or a clear error before any process starts.

Hypothesis draws each argument from valid names, invalid names, wrong types and edge values. The
outcome must be a Fabric, or a MisconfigurationError / TypeError / ValueError (or, for a name that
only a package which is not installed provides, an error with the pip command) raised by Fabric's
own code, whose message names something valid. No child process may appear.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from fabric_core import Fabric
from fabric_core.accelerators.cpu import CPUAccelerator
from fabric_core.checkpoint.torch_io import TorchCheckpointIO
from fabric_core.environments.local import LocalEnvironment
from fabric_core.errors import FabricError
from fabric_core.plugins.logger import Logger
from fabric_core.plugins.precision import Precision
from fabric_core.precision.mixed import MixedPrecision
from fabric_core.precision.true_dtype import TrueDtypePrecision
from fabric_core.strategies.ddp import DDPStrategy
from fabric_core.strategies.single_device import SingleDeviceStrategy
from fault_helpers import children_of, clean_env
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from torch import nn

_BACKENDS = ("fabric_core", "fabric_xla", "fabric_cuda", "fabric_deepspeed")
#: Folders of Fabric's own code (core and any installed backend): errors must be raised from there.
_FABRIC_SOURCES = tuple(
    str(Path(spec.origin).parent) for name in _BACKENDS if (spec := importlib.util.find_spec(name)) and spec.origin
)


class Fresh:
    """A value built anew for every example: plugins, strategies and loggers are stateful."""

    def __init__(self, label: str, build: Callable[[], Any]) -> None:
        self.label, self.build = label, build

    def __repr__(self) -> str:
        return self.label


def _realize(value: Any) -> Any:
    return value.build() if isinstance(value, Fresh) else value


class _Logger(Logger):
    @property
    def name(self) -> str:
        return "fuzz"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


WRONG_TYPES = [
    0,
    -1,
    1.5,
    0.0,
    float("nan"),
    float("inf"),
    True,
    False,
    "",
    " ",
    [],
    {},
    (),
    [None],
    {"a": 1},
    b"cpu",
    2**64,
    Fresh("object()", object),
    Fresh("lambda", lambda: lambda: None),
]
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789 ", max_size=12)
WRONG = st.sampled_from(WRONG_TYPES)

# Each argument: values that are valid on their own (combinations may still conflict), and invalid ones.
VALID = {
    "accelerator": st.sampled_from([None, "auto", "cpu", Fresh("CPUAccelerator()", CPUAccelerator)]),
    "strategy": st.sampled_from(
        [
            None,
            "auto",
            "ddp",
            "ddp_spawn",
            "ddp_fork",
            "ddp_notebook",
            "ddp_find_unused_parameters_true",
            "ddp_spawn_find_unused_parameters_true",
            "fsdp",
            "single_device",
            "xla",  # installed (fabric-xla) but not for the cpu accelerator
            Fresh("DDPStrategy()", DDPStrategy),
            Fresh("DDPStrategy(start_method='spawn')", lambda: DDPStrategy(start_method="spawn")),
            Fresh("SingleDeviceStrategy(cpu)", lambda: SingleDeviceStrategy(device=torch.device("cpu"))),
        ]
    ),
    "devices": st.sampled_from([None, "auto", 1, 2, -1, "1", "2", "-1", "0,1", "0", " 2 ", [0], [0, 1], (0, 1), [1]])
    | st.integers(1, 64),
    "num_nodes": st.integers(1, 8) | st.just(10**6),
    "precision": st.sampled_from(
        # the last three are valid names that the cpu accelerator refuses
        [
            32,
            "32",
            "32-true",
            64,
            "64",
            "64-true",
            "bf16",
            "bf16-mixed",
            "bf16-true",
            "16-true",
            None,
            32.0,
            16,
            "16",
            "16-mixed",
        ]
    ),
    "plugins": st.sampled_from(
        [
            None,
            [],
            Fresh("TorchCheckpointIO()", TorchCheckpointIO),
            Fresh("[TorchCheckpointIO()]", lambda: [TorchCheckpointIO()]),
            Fresh("[LocalEnvironment()]", lambda: [LocalEnvironment()]),
            Fresh("[Precision()]", lambda: [Precision()]),
            Fresh("(TrueDtypePrecision(64),)", lambda: (TrueDtypePrecision("64-true", torch.float64),)),
            Fresh(
                "[MixedPrecision(bf16), LocalEnvironment(), TorchCheckpointIO()]",
                lambda: [MixedPrecision("bf16-mixed", torch.bfloat16, "cpu"), LocalEnvironment(), TorchCheckpointIO()],
            ),
        ]
    ),
    "callbacks": st.sampled_from([None, [], Fresh("object()", object), Fresh("[object()]", lambda: [object()])]),
    "loggers": st.sampled_from(
        [
            None,
            [],
            Fresh("_Logger()", _Logger),
            Fresh("[_Logger(), _Logger()]", lambda: [_Logger(), _Logger()]),
            Fresh("(_Logger(),)", lambda: (_Logger(),)),
        ]
    ),
}
INVALID = {
    "accelerator": st.sampled_from(["cuda", "gpu", "tpu", "xla", "mps", "hpu", "CPU", "cpu ", "auto "]) | NAMES | WRONG,
    "strategy": st.sampled_from(
        ["deepspeed", "deepspeed_stage_3_offload", "xla_fsdp", "dp", "horovod", "DDP", "ddp_sharded", "fsdp "]
    )
    | NAMES
    | WRONG,
    "devices": st.sampled_from([0, -2, "a", "0,0", "1,a", "0x2", ["0"], [0, 0], [-1], [True], "1,", ",", "0,,1"])
    | st.integers(-5, 0)
    | NAMES
    | WRONG.filter(lambda v: v != 2**64),  # huge counts: see test_absurd_device_counts_fail_fast_with_a_clear_error
    "num_nodes": st.sampled_from([0, -1, 1.0, 2.5, "2", "1", None, True, False, [1], 2**64]) | st.integers(-3, 0),
    "precision": st.sampled_from(["fp16", "8", 8, "32-TRUE", "bf16_mixed", "transformer-engine", "mixed"])
    | NAMES
    | WRONG,
    "plugins": st.sampled_from(
        [
            Fresh("[TorchCheckpointIO(), TorchCheckpointIO()]", lambda: [TorchCheckpointIO(), TorchCheckpointIO()]),
            Fresh("[Precision(), Precision()]", lambda: [Precision(), Precision()]),
            Fresh("[CPUAccelerator()]", lambda: [CPUAccelerator()]),
            Fresh("[DDPStrategy()]", lambda: [DDPStrategy()]),
            "bf16-mixed",
            ["ddp"],
        ]
    )
    | WRONG,
    "callbacks": st.sampled_from([1, "x", 2.5]),  # any object is a callback: these build a Fabric
    # "csv"/"tensorboard" are registered logger names now: unknown names are the invalid strings
    "loggers": st.sampled_from(["no_such_logger", ["tensorboard "], Fresh("[object()]", lambda: [object()])]) | WRONG,
}
ARGUMENTS = tuple(VALID)


# What a message must mention (at least one of) for an error about each argument.
VALID_MENTIONS = {
    "accelerator": ("'cpu'", "accelerator='auto'", "pip install"),
    "strategy": ("'ddp'", "strategy='ddp'", "pip install", "supports 'tpu'"),
    "devices": ("Valid forms", "strategy='ddp'"),
    "num_nodes": ("positive int",),
    "precision": ("'32-true'", "precision='bf16-mixed'"),
    "plugins": ("Precision, ClusterEnvironment or CheckpointIO", "more than one", "pass one"),
    "loggers": ("Logger instances",),
    "callbacks": (),
}
DEFAULTS = {
    "accelerator": None,
    "strategy": None,
    "devices": None,
    "num_nodes": 1,
    "precision": 32,
    "plugins": None,
    "callbacks": None,
    "loggers": None,
}


def _note(outcome: str) -> None:
    """Count outcomes for ``--hypothesis-show-statistics`` (only inside a hypothesis test)."""
    if currently_in_test_context():
        event(outcome)


def _raised_in_fabric(error: BaseException) -> bool:
    """The innermost frame of the traceback is Fabric's own code (not torch's, not the stdlib's)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_FABRIC_SOURCES)


def _check_outcome(kwargs: dict[str, Any]) -> Fabric | None:
    before = children_of(os.getpid())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # ambiguous precision aliases warn by design
            fabric = Fabric(**kwargs)
    except (TypeError, ValueError) as error:  # MisconfigurationError is a ValueError
        message = str(error)
        given = [name for name, value in kwargs.items() if value is not DEFAULTS[name]]
        mentions = [m for name in given for m in VALID_MENTIONS[name]]
        assert any(m in message for m in mentions), f"{kwargs}: {type(error).__name__}: {message}"
        assert _raised_in_fabric(error), (
            f"{kwargs}: raised outside Fabric:\n{''.join(traceback.format_exception(error))}"
        )
        fabric = None
        _note(f"{type(error).__name__}: {message.split(' ')[0].split('=')[0]}")
    except FabricError as error:  # a name whose package is not installed (e.g. fabric-xla without torch_xla)
        assert "pip install" in str(error), f"{kwargs}: {type(error).__name__}: {error}"
        fabric = None
        _note(type(error).__name__)
    # anything else (RuntimeError, AttributeError, KeyError, MemoryError ...) propagates and fails the test
    assert children_of(os.getpid()) <= before, "the constructor started a process"
    assert not multiprocessing.active_children()
    if fabric is not None:
        _note(f"built {fabric.strategy.name}")
    return fabric


@settings(
    max_examples=800,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_constructor_arguments_give_a_fabric_or_a_clear_error(data):
    # mostly valid arguments, so that combinations are reached; zero to two of them invalid
    broken = data.draw(st.sets(st.sampled_from(ARGUMENTS), max_size=2), label="invalid arguments")
    kwargs = {}
    for name in ARGUMENTS:
        if name in broken:
            kwargs[name] = _realize(data.draw(INVALID[name], label=name))
        elif data.draw(st.booleans(), label=f"pass {name}"):
            kwargs[name] = _realize(data.draw(VALID[name], label=name))
        else:
            kwargs[name] = DEFAULTS[name]
    fabric = _check_outcome(kwargs)
    if fabric is None:
        return
    assert fabric.world_size >= 1
    assert fabric.strategy.accelerator is fabric.accelerator
    if fabric.world_size == 1 and fabric.strategy.launcher is None and not fabric.strategy.is_distributed:
        # one process, nothing to launch: it trains
        model = fabric.setup(nn.Linear(2, 1))
        assert model(torch.ones(1, 2).to(fabric.device)).shape == (1, 1)


@pytest.mark.parametrize(
    ("argument", "values"),
    [
        ("accelerator", [None, "auto", "cpu", "cuda", "gpu", "tpu", "xla", "mps", "", 1, True, [], 1.5]),
        ("strategy", [None, "auto", "ddp", "ddp_spawn", "fsdp", "deepspeed", "xla", "dp", "", 1, False, {}]),
        ("devices", [None, "auto", 1, 2, -1, "0,1", [0, 1], 0, -2, "", "a", [], [0, 0], 1.5, True]),
        ("num_nodes", [1, 2, 0, -1, 1.0, "2", None, True]),
        ("precision", [32, "bf16-mixed", "16-true", 16, "16-mixed", "", "fp16", True, [], None]),
        ("plugins", [None, [], "x", 1, [1]]),
        ("loggers", [None, [], 1, "x", [1]]),
        ("callbacks", [None, [], 1, "x"]),
    ],
)
def test_each_argument_alone(argument, values):
    """The same rules, one argument at a time with every other one at its default (readable failures)."""
    for value in values:
        _check_outcome({**DEFAULTS, argument: value})


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({"accelerator": "cuda"}, "cuda"),
        ({"accelerator": "gpu"}, "cuda"),
        ({"strategy": "deepspeed"}, "deepspeed"),
        ({"strategy": "deepspeed_stage_3_offload"}, "deepspeed"),
    ],
)
def test_names_that_need_another_package_give_the_install_hint(kwargs, extra):
    if importlib.util.find_spec(f"fabric_{extra}"):
        pytest.skip(f"fabric-{extra} is installed here")
    with pytest.raises(ValueError, match=rf'pip install "fabric-core\[{extra}\]"'):
        Fabric(**kwargs)


HUGE_DEVICES = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 1024**3, 6 * 1024**3))  # a runaway allocation fails fast here
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
try:
    Fabric(accelerator="cpu", devices=eval(sys.argv[1]))
except MisconfigurationError as err:
    print("MISCONFIGURATION", err)
except BaseException as err:
    print("OTHER", type(err).__name__, err)
else:
    print("BUILT")
"""


@pytest.mark.parametrize("devices", ["10**9", "'99999999'", "2**64"])
def test_absurd_device_counts_fail_fast_with_a_clear_error(tmp_path, devices):
    """Run in a child with a 6 GiB address-space limit so that the bug cannot take the machine's memory."""
    script = tmp_path / "huge.py"
    script.write_text(HUGE_DEVICES)
    proc = subprocess.run(
        [sys.executable, str(script), devices], capture_output=True, text=True, timeout=120, env=clean_env()
    )
    assert proc.stdout.startswith("MISCONFIGURATION"), proc.stdout + proc.stderr[-2000:]
    assert "Valid forms" in proc.stdout
