"""The DeepSpeed config Fabric builds from arguments and the user's config, and the combinations it refuses."""

from __future__ import annotations

import json

import pytest
from fabric_core.errors import MisconfigurationError
from fabric_deepspeed.config import build_config, load_config, offload_device, zero_stage


def test_defaults_are_stage_2_without_hidden_clipping_and_loop_owned_steps() -> None:
    config = build_config(None)
    assert zero_stage(config) == 2
    # DeepSpeed 0.19 would clip at 1.0 by default; Fabric clips only when asked.
    assert config["gradient_clipping"] == 0.0
    # Several fabric.backward calls before one optimizer.step() accumulate, as with DDP.
    assert config["managed_gradient_accumulation"] is False
    assert config["zero_allow_untested_optimizer"] is True
    assert config["zero_force_ds_cpu_optimizer"] is False


def test_arguments_fill_the_zero_section() -> None:
    config = build_config(
        None,
        stage=3,
        offload_optimizer=True,
        offload_parameters="nvme",
        nvme_path="/nvme",
        pin_memory=True,
        allgather_bucket_size=1000,
        reduce_bucket_size=2000,
        overlap_comm=True,
        contiguous_gradients=False,
        sub_group_size=10,
    )
    zero = config["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "nvme", "pin_memory": True, "nvme_path": "/nvme"}
    assert (zero["allgather_bucket_size"], zero["reduce_bucket_size"], zero["sub_group_size"]) == (1000, 2000, 10)
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is False


def test_user_config_is_kept_and_not_mutated() -> None:
    user = {"zero_optimization": {"stage": 1, "reduce_bucket_size": 123}, "train_batch_size": 16}
    config = build_config(user, gradient_clipping=0.5)
    assert user == {"zero_optimization": {"stage": 1, "reduce_bucket_size": 123}, "train_batch_size": 16}
    assert zero_stage(config) == 1
    assert config["zero_optimization"]["reduce_bucket_size"] == 123
    assert config["gradient_clipping"] == 0.5
    # DeepSpeed derives the micro batch from the user's train_batch_size: no second, conflicting value.
    assert "train_micro_batch_size_per_gpu" not in config


def test_user_config_keeps_deepspeeds_stage_default() -> None:
    assert zero_stage(build_config({"train_micro_batch_size_per_gpu": 2})) == 0


def test_argument_contradicting_the_config_is_refused() -> None:
    with pytest.raises(
        MisconfigurationError, match=r"stage=3 contradicts the config, which sets zero_optimization.stage=1"
    ):
        build_config({"zero_optimization": {"stage": 1}}, stage=3)


def test_config_from_json_file(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert zero_stage(build_config(load_config(path))) == 3
    assert zero_stage(build_config(load_config(str(path)))) == 3


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ("missing.json", "does not exist"),
        (42, "must be a dict or the path of a JSON file"),
    ],
)
def test_bad_config_argument(config, match) -> None:
    with pytest.raises(MisconfigurationError, match=match):
        load_config(config)


def test_config_file_that_is_not_json(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text("{stage: 3")
    with pytest.raises(MisconfigurationError, match="not valid JSON"):
        load_config(path)
    path.write_text("[1, 2]")
    with pytest.raises(MisconfigurationError, match="must hold a JSON object"):
        load_config(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stage": 4}, r"stage=4 is not a ZeRO stage; choose one of 0, 1, 2, 3"),
        ({"stage": True}, "is not a ZeRO stage"),
        ({"stage": 2, "offload_parameters": True}, "Offloading parameters needs ZeRO stage 3"),
        ({"stage": 0, "offload_optimizer": True}, "Offloading the optimizer needs ZeRO stage 1, 2 or 3"),
        ({"stage": 3, "offload_optimizer": "disk"}, r"offload_optimizer='disk' is not valid.*'cpu', 'nvme'"),
        ({"stage": 3, "offload_parameters": "nvme"}, "needs nvme_path"),
        ({"stage": 1, "overlap_comm": True}, "overlap_comm=True needs ZeRO stage 2 or 3"),
        ({"reduce_bucket_size": 0}, "reduce_bucket_size must be a positive int"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be an int >= 1"),
        ({"gradient_clipping": -1.0}, "gradient_clipping must be a number >= 0"),
    ],
)
def test_unsupported_combinations_fail_with_the_reason(kwargs, match) -> None:
    with pytest.raises(MisconfigurationError, match=match):
        build_config(None, **kwargs)


def test_deepspeed_counting_micro_batches_uses_its_managed_mode() -> None:
    config = build_config(None, gradient_accumulation_steps=4)
    assert config["gradient_accumulation_steps"] == 4
    assert config["managed_gradient_accumulation"] is True
    with pytest.raises(MisconfigurationError, match="cannot be combined with gradient_accumulation_steps > 1"):
        build_config({"managed_gradient_accumulation": False}, gradient_accumulation_steps=4)


def test_config_sections_are_checked() -> None:
    with pytest.raises(MisconfigurationError, match="enables both fp16 and bf16"):
        build_config({"fp16": {"enabled": True}, "bf16": {"enabled": True}})
    with pytest.raises(MisconfigurationError, match="Offloading parameters needs ZeRO stage 3"):
        build_config({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}})
    assert (
        offload_device(
            build_config({"zero_optimization": {"stage": 3, "offload_param": {"device": "none"}}}), "offload_param"
        )
        is None
    )
