"""Two real processes on the CPU (gloo) running DeepSpeed: parity with DDP, and every feature leg.

The legs all run in one spawned job (``ds_jobs.main_job``), started once per test session, so that
DeepSpeed's start-up is paid once; each test below checks one leg's result. Tolerances: float32 runs
must match DDP to rtol=1e-5/atol=1e-6 (ZeRO reduces in a different order than DDP's all-reduce;
observed differences are below 1e-7); bfloat16 runs must stay within 5e-3 of the float32 DDP run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fabric_core import Fabric
from fabric_deepspeed import DeepSpeedStrategy

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(900)]

HERE = Path(__file__).parent
RTOL, ATOL = 1e-5, 1e-6
BF16_ATOL = 5e-3


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import ds_jobs

    tmp = tmp_path_factory.mktemp("deepspeed")
    # The first strategy is launched by Fabric itself (spawn); the other legs join its process group.
    fabric = Fabric(accelerator="cpu", devices=2, strategy=DeepSpeedStrategy(stage=1, start_method="spawn"))
    return fabric.launch(ds_jobs.main_job, str(tmp))


def leg(results: dict[str, Any], name: str) -> Any:
    value = results[name]
    if isinstance(value, dict) and "error" in value:
        pytest.fail(f"leg {name!r} failed in the worker:\n{value['error']}", pytrace=False)
    return value


def assert_close(actual: list[float], expected: list[float], rtol: float = RTOL, atol: float = ATOL) -> None:
    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), rtol=rtol, atol=atol)


def assert_falls(losses: list[float]) -> None:
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.9 * first, f"loss did not fall: first four {losses[:4]}, last four {losses[-4:]}"


@pytest.mark.parametrize("name", ["stage0", "stage1", "stage2", "stage3", "stage2_offload", "stage3_offload"])
def test_zero_stages_match_ddp(results, name) -> None:
    losses = leg(results, name)
    assert len(losses) == 12
    assert_close(losses, leg(results, "ddp"))
    assert_falls(losses)


def test_stage3_with_adamw_matches_ddp(results) -> None:
    assert_close(leg(results, "stage3_adamw"), leg(results, "ddp_adamw"))
    assert_falls(leg(results, "stage3_adamw"))


@pytest.mark.parametrize("name", ["stage1_acc", "stage2_acc", "stage3_acc", "stage2_engine_acc"])
def test_gradient_accumulation_matches_ddp(results, name) -> None:
    """Two backwards then one step (the DDP way), or DeepSpeed counting micro-batches itself."""
    reference = leg(results, "ddp_acc")
    assert reference != leg(results, "ddp")  # accumulation really changes the run
    assert_close(leg(results, name), reference)


def test_gradient_clipping_matches_clip_gradients_under_ddp(results) -> None:
    clipped = leg(results, "stage2_clip")
    assert clipped != leg(results, "stage2")  # the norm limit was hit
    assert_close(clipped, leg(results, "ddp_clip"))


def test_clip_gradients_without_configured_clipping_says_how(results) -> None:
    message = leg(results, "clip_unconfigured")
    assert "clipping is off" in message and "DeepSpeedStrategy(gradient_clipping=1.0" in message


@pytest.mark.parametrize("name", ["stage2_bf16-mixed", "stage2_bf16-true", "stage3_bf16-mixed"])
def test_bf16_trains_in_bf16_and_returns_float32(results, name) -> None:
    run = leg(results, name)
    assert run["engine_param_dtype"] == "torch.bfloat16"
    assert run["output_dtype"] == "torch.float32"
    assert run["created_dtype"] == ("torch.bfloat16" if name.endswith("true") else "torch.float32")
    assert all(later < earlier for earlier, later in zip(run["losses"], run["losses"][1:]))
    assert_close(run["losses"], leg(results, "ddp_full_batch"), rtol=0, atol=BF16_ATOL)


def test_init_module_creates_stage3_parameters_already_partitioned(results) -> None:
    run = leg(results, "init_module_stage3")
    for name, (local_numel, full_numel, shard_numel) in run["shapes"].items():
        assert local_numel == 0, name  # nothing materialised whole
        assert shard_numel == (full_numel + 1) // 2, name  # each rank holds half
    assert_falls(run["losses"])


def test_several_models_need_model_in_backward_and_train_like_ddp(results) -> None:
    run = leg(results, "two_models")
    assert "fabric.backward(loss, model=model)" in run["without_model"]
    reference = leg(results, "two_models_ddp")
    assert_close(run["a"], reference["a"])
    assert_close(run["b"], reference["b"])


def test_scheduler_passed_to_setup_is_stepped_by_the_engine(results) -> None:
    run = leg(results, "scheduler")
    assert run["returned_same"] and run["engine_has_it"]
    assert run["lr_after_3_steps"] == pytest.approx(0.1 * 0.5**3)
    assert run["engine_lr"] == pytest.approx(0.1 * 0.5**3)


def test_returned_optimizer_is_the_users_class_and_drives_the_engine(results) -> None:
    run = leg(results, "optimizer_view")
    assert run["isinstance_adamw"]
    # a scheduler built on the returned optimizer changes the learning rate the engine uses
    assert run["engine_lr"] == pytest.approx(0.01 * 0.25) == run["user_lr"]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_plain_loss_backward_trains_like_fabric_backward_under_zero(results, stage) -> None:
    # DeepSpeed hooks its forward's outputs, so loss.backward() runs the engine's reduction too.
    assert_close(leg(results, f"plain_backward_stage{stage}"), leg(results, "ddp"))


def test_plain_loss_backward_is_refused_by_the_engine_at_stage0(results) -> None:
    assert "engine.backward(loss)" in leg(results, "plain_backward_stage0")


def test_stepping_the_original_optimizer_is_refused(results) -> None:
    run = leg(results, "raw_step")
    assert "not on the one it returned" in run["raw"] and "DeepSpeed engine" in run["raw"]
    assert run["engine_steps"] == 1


@pytest.mark.parametrize("stage", [2, 3])
def test_checkpoint_round_trip_resumes_exactly(results, stage) -> None:
    run = leg(results, f"resume_stage{stage}")
    assert run["resumed"] == run["continued"]
    assert run["step"] == 3
    assert run["remainder"] == {"note": [0, 1, 2]}
    assert run["lr"] == pytest.approx(run["lr_expected"])
    assert run["scheduler_epoch"] == run["scheduler_epoch_expected"]
    assert "latest" in run["files"] and "checkpoint" in run["files"]
    assert run["siblings"] == [f"ckpt-stage{stage}"]  # saved twice: no staging or backup folder left behind


def test_stage3_checkpoint_converts_to_one_file(results) -> None:
    run = leg(results, "convert_stage3")
    assert run["keys"] == ["model", "step"] and run["step"] == 2
    assert run["max_diff"] < 1e-6


def test_loading_is_weights_only_unless_trusted(results) -> None:
    run = leg(results, "safe_loading")
    assert run["weights_only"].startswith("CheckpointError") and "Marker" in run["weights_only"]
    assert "weights_only=False" in run["weights_only"]
    assert run["trusted"] == "Marker"


def test_loading_says_what_a_deepspeed_checkpoint_needs(results) -> None:
    run = leg(results, "load_errors")
    assert run["plain_is_file"] == "True" and run["plain_step"] == "1"
    assert "is not a DeepSpeed checkpoint folder" in run["plain_into_engine"]
    assert "pass the state to restore into" in run["folder_without_state"]


def test_model_without_optimizer_forwards_under_stage3(results) -> None:
    assert leg(results, "setup_module_stage3") < 1e-6


def test_named_strategy_in_a_user_script_relaunched_by_fabric(tmp_path) -> None:
    """`deepspeed_stage_3_offload` by name, bf16, the default launch (the script re-runs itself for rank 1)."""
    out = tmp_path / "out.json"
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "scripts" / "ds_train_named.py"),
            "deepspeed_stage_3_offload",
            "bf16-mixed",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = json.loads(out.read_text())
    assert run["world_size"] == 2
    assert run["partitioned_at_init"]
    assert run["losses"][-1] < 0.9 * run["losses"][0]
