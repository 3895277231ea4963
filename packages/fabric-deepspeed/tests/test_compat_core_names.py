"""Lightning names that core resolves through the installed fabric-deepspeed: the offload strategy strings and the
backend precision at Lightning's ``plugins`` paths (here, where fabric-deepspeed is installed, not skipped in core)."""

from __future__ import annotations

import pytest
from fabric_core.connector import resolve_plan


@pytest.mark.parametrize("name", ["deepspeed_stage_1_offload", "deepspeed_stage_3_offload_nvme"])
def test_deepspeed_offload_names(name):
    plan = resolve_plan(accelerator="cpu", strategy=name, devices=2, env={})
    zero = plan.strategy.config["zero_optimization"]
    if name == "deepspeed_stage_1_offload":
        assert zero["stage"] == 1
        assert zero["offload_optimizer"]["device"] == "cpu"
    else:
        assert zero["stage"] == 3
        assert zero["offload_optimizer"]["device"] == "nvme"
        assert zero["offload_param"]["device"] == "nvme"
        assert zero["offload_param"]["nvme_path"] == "/local_nvme"


def test_a_backend_precision_resolves_through_the_installed_package():
    from fabric_core.plugins import DeepSpeedPrecision
    from fabric_core.plugins.precision import DeepSpeedPrecision as FromPrecision
    from fabric_deepspeed import DeepSpeedPrecision as Real

    assert DeepSpeedPrecision is Real and FromPrecision is Real
