"""What the two processes of the multi-process tests run: every leg in one job, to pay DeepSpeed's start-up once.

Each leg's result (or its traceback) is returned from rank 0, so that one failing leg does not hide
the others. The first strategy is launched by Fabric itself (spawn); the later ones join the same
process group the way a torchrun-started script would.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ds_training as T
import torch
from fabric_core import Fabric
from fabric_core.errors import MisconfigurationError
from fabric_deepspeed import DeepSpeedStrategy, convert_zero_checkpoint_to_fp32_state_dict
from torch import nn


class Marker:
    """A plain object: safe (weights-only) loading must refuse to unpickle it."""

    def __init__(self, value: int) -> None:
        self.value = value


def _leg(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    try:
        results[name] = fn()
    except Exception:
        results[name] = {"error": traceback.format_exc()}


def _ds(accelerator: str = "cpu", precision: str = "32-true", **kwargs: Any) -> Fabric:
    if kwargs.get("stage") == 3 and "config" not in kwargs:
        kwargs["config"] = T.STAGE3_SHARD_ALL
    return T.nested_fabric(DeepSpeedStrategy(**kwargs), precision=precision, accelerator=accelerator)


def parity_legs(fabric: Fabric, results: dict[str, Any], accelerator: str) -> None:
    """Losses of DDP and every ZeRO stage on the same seed and data."""
    results["stage1"] = T.train(fabric)  # the launching strategy is stage 1
    T.join_as_launched(fabric)
    ddp = lambda: T.nested_fabric("ddp", accelerator=accelerator)  # noqa: E731
    _leg(results, "ddp", lambda: T.train(ddp()))
    _leg(results, "stage0", lambda: T.train(_ds(accelerator, stage=0)))
    _leg(results, "stage2", lambda: T.train(_ds(accelerator, stage=2)))
    _leg(results, "stage3", lambda: T.train(_ds(accelerator, stage=3)))
    _leg(results, "stage2_offload", lambda: T.train(_ds(accelerator, stage=2, offload_optimizer=True)))
    _leg(
        results,
        "stage3_offload",
        lambda: T.train(_ds(accelerator, stage=3, offload_optimizer=True, offload_parameters=True)),
    )
    _leg(results, "stage3_adamw", lambda: T.train(_ds(accelerator, stage=3), optimizer="adamw", lr=0.01))
    _leg(results, "ddp_adamw", lambda: T.train(ddp(), optimizer="adamw", lr=0.01))
    # gradient accumulation: the DDP way (2 backwards, 1 step) and DeepSpeed's own counting
    _leg(results, "ddp_acc", lambda: T.train(ddp(), accumulate=2))
    for stage in (1, 2, 3):
        _leg(results, f"stage{stage}_acc", lambda s=stage: T.train(_ds(accelerator, stage=s), accumulate=2))
    _leg(
        results,
        "stage2_engine_acc",
        lambda: T.train(
            _ds(accelerator, stage=2, gradient_accumulation_steps=2), accumulate=2, engine_accumulates=True
        ),
    )
    # clipping: DeepSpeed's gradient_clipping against Fabric's clip_gradients under DDP
    _leg(results, "ddp_clip", lambda: T.train(ddp(), clip=0.05))
    _leg(results, "stage2_clip", lambda: T.train(_ds(accelerator, stage=2, gradient_clipping=0.05), clip=0.05))
    _leg(results, "clip_unconfigured", lambda: _clip_error(_ds(accelerator, stage=2)))
    # precision
    for precision in ("bf16-mixed", "bf16-true"):
        _leg(
            results,
            f"stage2_{precision}",
            lambda p=precision: _precision_run(_ds(accelerator, precision=p, stage=2), p),
        )
    _leg(
        results,
        "stage3_bf16-mixed",
        lambda: _precision_run(_ds(accelerator, precision="bf16-mixed", stage=3), "bf16-mixed"),
    )
    _leg(results, "ddp_full_batch", lambda: T.full_batch(ddp(), T.make_model())[0])
    if accelerator == "cuda":
        _leg(
            results,
            "stage2_16-mixed",
            lambda: _precision_run(_ds(accelerator, precision="16-mixed", stage=2), "16-mixed"),
        )


def _clip_error(fabric: Fabric) -> str:
    try:
        T.train(fabric, steps=1, clip=1.0)
    except MisconfigurationError as err:
        return str(err)
    return "no error"


def _precision_run(fabric: Fabric, precision: str) -> dict[str, Any]:
    if precision.endswith("true"):
        with fabric.init_module():
            model = T.Net()
        created_dtype = str(next(model.parameters()).dtype)
        model.load_state_dict(T.initial_state())
    else:
        model, created_dtype = T.make_model(), "torch.float32"
    losses, wrapped, out = T.full_batch(fabric, model)
    return {
        "losses": losses,
        "created_dtype": created_dtype,
        "engine_param_dtype": str(next(wrapped._forward_module.module.parameters()).dtype),
        "output_dtype": str(out.dtype),
    }


def feature_legs(results: dict[str, Any], tmp: Path, accelerator: str) -> None:
    """init_module under ZeRO-3, several models, scheduler, checkpoints, conversion, safe loading."""
    _leg(results, "init_module_stage3", lambda: _init_module_stage3(_ds(accelerator, stage=3)))
    _leg(results, "two_models", lambda: _two_models(_ds(accelerator, stage=2)))
    _leg(results, "two_models_ddp", lambda: _two_models(T.nested_fabric("ddp", accelerator=accelerator)))
    _leg(results, "scheduler", lambda: _scheduler(_ds(accelerator, stage=2)))
    _leg(results, "optimizer_view", lambda: _optimizer_view(_ds(accelerator, stage=2)))
    for stage in (2, 3):
        _leg(results, f"resume_stage{stage}", lambda s=stage: _resume(accelerator, s, tmp / f"ckpt-stage{s}"))
    _leg(results, "convert_stage3", lambda: _convert(accelerator, tmp))
    _leg(results, "safe_loading", lambda: _safe_loading(accelerator, tmp / "unsafe"))
    _leg(results, "load_errors", lambda: _load_errors(accelerator, tmp))
    _leg(results, "setup_module_stage3", lambda: _setup_module_stage3(_ds(accelerator, stage=3)))
    # a plain loss.backward(): the engine's own hooks make it right under ZeRO, the engine refuses it at stage 0
    for stage in (1, 2, 3):
        _leg(
            results,
            f"plain_backward_stage{stage}",
            lambda s=stage: T.train(_ds(accelerator, stage=s), plain_backward=True),
        )
    _leg(
        results,
        "plain_backward_stage0",
        lambda: _error_of(lambda: T.train(_ds(accelerator, stage=0), plain_backward=True)),
    )
    _leg(results, "raw_step", lambda: _raw_step(_ds(accelerator, stage=2)))


def _error_of(call: Callable[[], Any]) -> str:
    try:
        call()
    except RuntimeError as err:
        return str(err)
    return "no error"


def _raw_step(fabric: Fabric) -> dict[str, Any]:
    """Stepping the optimizer passed to fabric.setup (not the returned one) would bypass the engine: refused."""
    model = T.make_model()
    user_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model, opt = fabric.setup(model, user_opt)
    x, y = T.dataset().tensors
    fabric.backward(nn.functional.mse_loss(model(x.to(fabric.device)), y.to(fabric.device)))
    raw = _error_of(user_opt.step)
    opt.step()  # the returned optimizer steps through the engine (which steps the user's optimizer inside)
    return {"raw": raw, "engine_steps": fabric.strategy.engines[-1].global_steps}


def _init_module_stage3(fabric: Fabric) -> dict[str, Any]:
    with fabric.init_module():
        model = T.Net()
    shapes = {
        name: (p.numel(), getattr(p, "ds_numel", None), p.ds_tensor.numel()) for name, p in model.named_parameters()
    }
    losses = T.train(fabric, model=model, steps=12)
    return {"shapes": shapes, "losses": losses}


def _two_models(fabric: Fabric) -> dict[str, list[float]]:
    a, b = T.make_model(), T.make_model()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(0.5)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    a, opt_a = fabric.setup(a, opt_a)
    b, opt_b = fabric.setup(b, opt_b)
    x, y = T.dataset().tensors
    x, y = x[fabric.global_rank :: 2].to(fabric.device), y[fabric.global_rank :: 2].to(fabric.device)
    result: dict[str, Any] = {"a": [], "b": []}
    if fabric.strategy.name != "ddp":
        loss = nn.functional.mse_loss(a(x), y)
        try:
            fabric.backward(loss)
            result["without_model"] = "no error"
        except MisconfigurationError as err:
            result["without_model"] = str(err)
    for _ in range(4):
        loss_a = nn.functional.mse_loss(a(x), y)
        loss_b = nn.functional.mse_loss(b(x), y)
        fabric.backward(loss_a, model=a)
        fabric.backward(loss_b, model=b)
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()
        result["a"].append(float(fabric.all_reduce(loss_a.detach())))
        result["b"].append(float(fabric.all_reduce(loss_b.detach())))
    return result


def _scheduler(fabric: Fabric) -> dict[str, Any]:
    model = T.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model, opt, sched_out = fabric.setup(model, opt, scheduler=sched)
    x, y = T.dataset().tensors
    for _ in range(3):
        fabric.backward(nn.functional.mse_loss(model(x.to(fabric.device)), y.to(fabric.device)))
        opt.step()
        opt.zero_grad()
    engine = fabric.strategy.engines[-1]
    return {
        "returned_same": sched_out is sched,
        "engine_has_it": engine.lr_scheduler is sched,
        "lr_after_3_steps": opt.param_groups[0]["lr"],
        "engine_lr": engine.get_lr()[0],
    }


def _optimizer_view(fabric: Fabric) -> dict[str, Any]:
    model = T.make_model()
    user_opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model, opt = fabric.setup(model, user_opt)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)  # built after setup, on the returned one
    x, y = T.dataset().tensors
    for _ in range(2):
        fabric.backward(nn.functional.mse_loss(model(x.to(fabric.device)), y.to(fabric.device)))
        opt.step()
        opt.zero_grad()
        sched.step()
    return {
        "isinstance_adamw": isinstance(opt, torch.optim.AdamW),
        "user_lr": user_opt.param_groups[0]["lr"],
        "engine_lr": fabric.strategy.engines[-1].get_lr()[0],
    }


def _fresh(accelerator: str, stage: int) -> tuple[Fabric, Any, Any, Any]:
    fabric = _ds(accelerator, stage=stage)
    model = T.make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    model, opt, sched = fabric.setup(model, opt, scheduler=sched)
    return fabric, model, opt, sched


def _steps(fabric: Fabric, model: Any, opt: Any, n: int, offset: int) -> list[float]:
    x, y = T.dataset().tensors
    losses = []
    for i in range(offset, offset + n):
        xb = x[(i * 4) % T.SAMPLES :][:4].to(fabric.device)
        yb = y[(i * 4) % T.SAMPLES :][:4].to(fabric.device)
        loss = nn.functional.mse_loss(model(xb), yb)
        fabric.backward(loss)
        opt.step()
        opt.zero_grad()
        losses.append(float(fabric.all_reduce(loss.detach())))
    return losses


def _resume(accelerator: str, stage: int, path: Path) -> dict[str, Any]:
    fabric, model, opt, sched = _fresh(accelerator, stage)
    _steps(fabric, model, opt, 3, 0)
    fabric.save(path, {"model": model, "optimizer": opt, "scheduler": sched, "step": 3, "note": torch.arange(3)})
    fabric.save(
        path, {"model": model, "optimizer": opt, "scheduler": sched, "step": 3, "note": torch.arange(3)}
    )  # replaces it
    continued = _steps(fabric, model, opt, 3, 3)

    fabric2, model2, opt2, sched2 = _fresh(accelerator, stage)
    state = {"model": model2, "optimizer": opt2, "scheduler": sched2, "step": 0}
    remainder = fabric2.load(path, state)
    resumed = _steps(fabric2, model2, opt2, 3, 3)
    return {
        "continued": continued,
        "resumed": resumed,
        "step": state["step"],
        "remainder": {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in remainder.items()},
        # what the engine steps with (the Fabric wrapper's own param_groups go stale after a load: a core bug)
        "lr": fabric2.strategy.engines[-1].get_lr()[0],
        "lr_expected": fabric.strategy.engines[-1].get_lr()[0],
        "scheduler_epoch": sched2.last_epoch,
        "scheduler_epoch_expected": sched.last_epoch,
        "files": sorted(p.name for p in path.iterdir()),
        "siblings": sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)),
    }


def _convert(accelerator: str, tmp: Path) -> dict[str, Any]:
    fabric, model, opt, _ = _fresh(accelerator, 3)
    _steps(fabric, model, opt, 2, 0)
    folder, output = tmp / "to-convert", tmp / "consolidated.pt"
    fabric.save(folder, {"model": model, "optimizer": opt, "step": 2})
    x = T.dataset().tensors[0][:5].to(fabric.device)
    with torch.no_grad():
        expected = model(x).float().cpu()
    if fabric.global_rank == 0:
        convert_zero_checkpoint_to_fp32_state_dict(folder, output)
    fabric.barrier()
    # the consolidated file loads without DeepSpeed, with safe loading, into a plain model
    loaded = torch.load(output, weights_only=True)
    plain = T.Net()
    plain.load_state_dict(loaded["model"])
    with torch.no_grad():
        got = plain(x.cpu())
    return {
        "max_diff": float((got - expected).abs().max()),
        "keys": sorted(k for k in loaded if not k.startswith("__")),
        "step": loaded["step"],
    }


def _safe_loading(accelerator: str, path: Path) -> dict[str, Any]:
    fabric, model, opt, _ = _fresh(accelerator, 2)
    fabric.save(path, {"model": model, "optimizer": opt, "marker": Marker(7)})
    result: dict[str, Any] = {}
    try:
        fabric.load(path, {"model": model, "optimizer": opt})
        result["weights_only"] = "loaded"
    except Exception as err:
        result["weights_only"] = f"{type(err).__name__}: {err}"
    remainder = fabric.load(path, {"model": model, "optimizer": opt}, weights_only=False)
    result["trusted"] = type(remainder.get("marker")).__name__
    return result


def _load_errors(accelerator: str, tmp: Path) -> dict[str, str]:
    fabric, model, opt, _ = _fresh(accelerator, 2)
    fabric.save(tmp / "plain.pt", {"step": 1})  # no DeepSpeed model in it: one ordinary file
    fabric.save(tmp / "folder", {"model": model, "optimizer": opt})
    messages = {"plain_is_file": str((tmp / "plain.pt").is_file())}
    for name, call in {
        "plain_into_engine": lambda: fabric.load(tmp / "plain.pt", {"model": model}),
        "folder_without_state": lambda: fabric.load(tmp / "folder"),
    }.items():
        try:
            call()
            messages[name] = "no error"
        except MisconfigurationError as err:
            messages[name] = str(err)
    messages["plain_step"] = str(fabric.load(tmp / "plain.pt")["step"])
    return messages


def _setup_module_stage3(fabric: Fabric) -> float:
    """A frozen model set up without optimizer (a teacher) forwards like the plain model."""
    teacher = fabric.setup_module(T.make_model())
    x = T.dataset().tensors[0][:5]
    with torch.no_grad():
        got = teacher(x.to(fabric.device)).cpu()
        expected = T.make_model()(x)
    return float((got - expected).abs().max())


def main_job(fabric: Fabric, tmp: str, accelerator: str = "cpu") -> dict[str, Any]:
    """Run every leg; ``fabric`` was launched with ``DeepSpeedStrategy(stage=1)`` on two devices."""
    results: dict[str, Any] = {}
    parity_legs(fabric, results, accelerator)
    feature_legs(results, Path(tmp), accelerator)
    results["pid"] = os.getpid()
    return results
