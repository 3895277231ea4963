"""Choosing a DeepSpeed strategy through Fabric: registered names, precisions, and errors before any process starts."""

from __future__ import annotations

import importlib.machinery
import subprocess
import sys
from importlib import metadata

import pytest
import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError, PluginNotInstalledError
from fabric_core.precision.registrations import mixed_bf16
from fabric_deepspeed import DeepSpeedPrecision, DeepSpeedStrategy
from fabric_deepspeed.config import offload_device
from packaging.requirements import Requirement
from torch import nn

NAMES = {
    "deepspeed": (2, None, None),
    "deepspeed_stage_1": (1, None, None),
    "deepspeed_stage_2": (2, None, None),
    "deepspeed_stage_2_offload": (2, "cpu", None),
    "deepspeed_stage_3": (3, None, None),
    "deepspeed_stage_3_offload": (3, "cpu", "cpu"),
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_names_build_configured_strategies(name) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy=name)
    strategy = fabric.strategy
    stage, offload_opt, offload_param = NAMES[name]
    assert isinstance(strategy, DeepSpeedStrategy)
    assert strategy.name == name
    assert strategy.zero_stage == stage
    assert offload_device(strategy.config, "offload_optimizer") == offload_opt
    assert offload_device(strategy.config, "offload_param") == offload_param
    assert strategy.world_size == 2
    assert strategy.requires_joint_setup
    # only stages 0/1 leave backward free of communication
    assert strategy.supports_no_backward_sync == (stage <= 1)


def test_the_package_declares_its_plugin_api_and_deepspeed_dependency() -> None:
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="fabric_core.plugin_api")}
    assert entry_points["fabric_deepspeed"] == "fabric_deepspeed.__about__:FABRIC_PLUGIN_API"
    requirements = [Requirement(r) for r in metadata.requires("fabric-deepspeed") or []]
    deepspeed = next(r for r in requirements if r.name == "deepspeed")
    assert deepspeed.specifier.contains("0.19.8")


@pytest.mark.parametrize(
    ("precision", "section", "identity"),
    [("32-true", None, True), ("bf16-mixed", "bf16", False), ("bf16-true", "bf16", False)],
)
def test_precision_is_deepspeeds_own_and_configures_the_engine(precision, section, identity) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="deepspeed_stage_2", precision=precision)
    plugin = fabric.strategy.precision
    assert isinstance(plugin, DeepSpeedPrecision)
    assert plugin.name == precision and plugin.is_identity == identity
    config = fabric.strategy.config
    assert ("bf16" in config) == (section == "bf16")
    if section:
        assert config[section]["enabled"] is True
        # no autocast: the engine runs the model in bf16; inputs are cast to it, outputs back to float32
        x = {"x": torch.ones(2), "ids": torch.ones(2, dtype=torch.long)}
        converted = plugin.convert_input(x)
        assert converted["x"].dtype == torch.bfloat16 and converted["ids"].dtype == torch.long
        assert plugin.convert_output(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32


def test_true_precision_creates_modules_in_the_low_dtype_and_mixed_does_not() -> None:
    true = DeepSpeedPrecision("bf16-true")
    with true.module_init_context():
        assert nn.Linear(2, 2).weight.dtype == torch.bfloat16
    assert true.convert_module(nn.Linear(2, 2)).weight.dtype == torch.bfloat16
    mixed = DeepSpeedPrecision("bf16-mixed")
    with mixed.module_init_context():
        assert nn.Linear(2, 2).weight.dtype == torch.float32
    assert mixed.convert_module(nn.Linear(2, 2)).weight.dtype == torch.float32  # the engine casts it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "64-true"}, r"not supported by the DeepSpeed strategies; choose one of '32-true', 'bf16-mixed'"),
        ({"plugins": [mixed_bf16("cpu")]}, "Pass the name instead: Fabric\\(precision='bf16-mixed'\\)"),
        (
            {"strategy": DeepSpeedStrategy(config={"bf16": {"enabled": True}})},
            "config enables bf16, but precision='32-true'",
        ),
    ],
)
def test_invalid_combinations_fail_at_construction(kwargs, match) -> None:
    arguments = {"accelerator": "cpu", "devices": 2, "strategy": "deepspeed_stage_2", **kwargs}
    with pytest.raises((MisconfigurationError, ValueError), match=match):
        Fabric(**arguments)


def test_offloading_parameters_below_stage_3_fails_before_fabric_exists() -> None:
    with pytest.raises(MisconfigurationError, match="Offloading parameters needs ZeRO stage 3"):
        DeepSpeedStrategy(stage=2, offload_parameters=True)


def test_fp16_config_with_bf16_precision_is_refused() -> None:
    with pytest.raises(MisconfigurationError, match="config enables fp16, but precision='bf16-mixed'"):
        Fabric(
            accelerator="cpu",
            devices=2,
            strategy=DeepSpeedStrategy(config={"fp16": {"enabled": True}}),
            precision="bf16-mixed",
        )


class _BlockDeepSpeed:
    """A meta-path finder that makes ``deepspeed`` look uninstalled."""

    def find_spec(self, name, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if name == "deepspeed" or name.startswith("deepspeed."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def test_missing_deepspeed_library_gives_the_install_command(monkeypatch) -> None:
    for module in [m for m in sys.modules if m == "deepspeed" or m.startswith("deepspeed.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [_BlockDeepSpeed(), *sys.meta_path])
    with pytest.raises(PluginNotInstalledError, match="pip install deepspeed"):
        DeepSpeedStrategy()
    with pytest.raises(PluginNotInstalledError, match="pip install deepspeed"):
        Fabric(accelerator="cpu", devices=2, strategy="deepspeed_stage_3")


def test_importing_the_package_does_not_import_deepspeed() -> None:
    code = "import sys, fabric_deepspeed; fabric_deepspeed.DeepSpeedStrategy; print('deepspeed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_engine_takes_one_optimizer() -> None:
    strategy = DeepSpeedStrategy()
    model = nn.Linear(2, 2)
    optimizers = [torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(model.parameters(), lr=0.1)]
    with pytest.raises(ValueError, match="A DeepSpeed engine takes one optimizer, but 2 were passed"):
        strategy.setup_module_and_optimizers(model, optimizers)


def test_backward_before_setup_says_what_to_do() -> None:
    strategy = DeepSpeedStrategy()
    with pytest.raises(MisconfigurationError, match=r"model, optimizer = fabric.setup\(model, optimizer\)"):
        strategy.backward(torch.ones((), requires_grad=True), None)


def test_clipping_by_value_is_refused_with_the_alternative() -> None:
    with pytest.raises(MisconfigurationError, match="clipping by value is not supported"):
        DeepSpeedStrategy().clip_gradients_value(nn.Linear(2, 2), None, 1.0)
