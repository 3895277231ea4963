"""Building and checking the DeepSpeed config dict, without importing DeepSpeed.

Everything here runs at ``DeepSpeedStrategy(...)`` construction, in the launching process, so that
a combination DeepSpeed cannot run fails before any worker process is started.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fabric_core.errors import MisconfigurationError

STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("cpu", "nvme")
DEFAULT_STAGE = 2

# Top-level settings Fabric needs, filled in when the user's config does not set them.
_DEFAULTS: dict[str, Any] = {
    # DeepSpeed only uses the batch size for its own data loader and throughput report; Fabric's loop
    # owns batching, but DeepSpeed insists on a value.
    "train_micro_batch_size_per_gpu": 1,
    # Users pass their own torch optimizers (SGD, AdamW, ...): let ZeRO wrap any of them, and do not
    # force DeepSpeedCPUAdam (which compiles a C++ op) unless the user picks it.
    "zero_allow_untested_optimizer": True,
    "zero_force_ds_cpu_optimizer": False,
    # DeepSpeed prints a progress line every `steps_per_print` steps; Fabric users log themselves.
    "steps_per_print": 2**31 - 1,
    "wall_clock_breakdown": False,
    # DeepSpeed 0.19 clips the gradient norm at 1.0 unless told otherwise; Fabric clips only when asked
    # (gradient_clipping=..., as DDP does nothing behind the loop's back).
    "gradient_clipping": 0.0,
}


def load_config(config: Mapping[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """A private copy of the user's config: a dict, or the path of a JSON file."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise MisconfigurationError(
                f"DeepSpeed config file {str(path)!r} does not exist (config takes a dict or a JSON file path)."
            )
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise MisconfigurationError(f"DeepSpeed config file {str(path)!r} is not valid JSON: {err}") from None
        if not isinstance(loaded, dict):
            raise MisconfigurationError(
                f"DeepSpeed config file {str(path)!r} must hold a JSON object, got {type(loaded).__name__}."
            )
        return loaded
    raise MisconfigurationError(f"config must be a dict or the path of a JSON file, got {type(config).__name__}.")


def _offload_device(name: str, value: bool | str | None) -> str | None:
    if value is None or value is False:
        return None
    if value is True:
        return "cpu"
    if value in OFFLOAD_DEVICES:
        return str(value)
    raise MisconfigurationError(
        f"{name}={value!r} is not valid; pass True (cpu), False, or one of {', '.join(map(repr, OFFLOAD_DEVICES))}."
    )


def _put(config: dict[str, Any], keys: tuple[str, ...], value: Any, argument: str) -> None:
    """Write ``value`` at ``keys``; an argument that contradicts the user's config is an error."""
    node = config
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise MisconfigurationError(
                f"DeepSpeed config entry {'.'.join(keys[:-1])!r} must be a dict, got {child!r}."
            )
        node = child
    last = keys[-1]
    if last in node and node[last] != value:
        raise MisconfigurationError(
            f"{argument}={value!r} contradicts the config, which sets {'.'.join(keys)}={node[last]!r}. "
            "Set it in one place: the argument or the config."
        )
    node[last] = value


def build_config(
    config: dict[str, Any] | None,
    *,
    stage: int | None = None,
    offload_optimizer: bool | str | None = None,
    offload_parameters: bool | str | None = None,
    nvme_path: str | None = None,
    pin_memory: bool | None = None,
    allgather_bucket_size: int | None = None,
    reduce_bucket_size: int | None = None,
    contiguous_gradients: bool | None = None,
    overlap_comm: bool | None = None,
    sub_group_size: int | None = None,
    gradient_accumulation_steps: int | None = None,
    gradient_clipping: float | None = None,
) -> dict[str, Any]:
    """The DeepSpeed config for these arguments, on top of the user's ``config`` (arguments left ``None`` keep it)."""
    result = copy.deepcopy(config) if config is not None else {}
    if stage is None and config is None:
        stage = DEFAULT_STAGE
    if stage is not None:
        if isinstance(stage, bool) or stage not in STAGES:
            raise MisconfigurationError(
                f"stage={stage!r} is not a ZeRO stage; choose one of {', '.join(map(str, STAGES))}."
            )
        _put(result, ("zero_optimization", "stage"), stage, "stage")
    zero_args: dict[str, Any] = {
        "allgather_bucket_size": allgather_bucket_size,
        "reduce_bucket_size": reduce_bucket_size,
        "contiguous_gradients": contiguous_gradients,
        "overlap_comm": overlap_comm,
        "sub_group_size": sub_group_size,
    }
    for key, value in zero_args.items():
        if value is None:
            continue
        if key.endswith("_size") and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise MisconfigurationError(f"{key} must be a positive int (number of elements), got {value!r}.")
        _put(result, ("zero_optimization", key), value, key)
    for argument, section, value in (
        ("offload_optimizer", "offload_optimizer", offload_optimizer),
        ("offload_parameters", "offload_param", offload_parameters),
    ):
        device = _offload_device(argument, value)
        if device is None:
            continue
        _put(result, ("zero_optimization", section, "device"), device, argument)
        if pin_memory is not None:
            _put(result, ("zero_optimization", section, "pin_memory"), pin_memory, "pin_memory")
        if device == "nvme":
            if not nvme_path:
                raise MisconfigurationError(
                    f"{argument}='nvme' needs nvme_path, the folder on the NVMe drive to offload to."
                )
            _put(result, ("zero_optimization", section, "nvme_path"), str(nvme_path), "nvme_path")
    if gradient_accumulation_steps is not None:
        if (
            isinstance(gradient_accumulation_steps, bool)
            or not isinstance(gradient_accumulation_steps, int)
            or gradient_accumulation_steps < 1
        ):
            raise MisconfigurationError(
                f"gradient_accumulation_steps must be an int >= 1, got {gradient_accumulation_steps!r}."
            )
        _put(result, ("gradient_accumulation_steps",), gradient_accumulation_steps, "gradient_accumulation_steps")
    if gradient_clipping is not None:
        if (
            isinstance(gradient_clipping, bool)
            or not isinstance(gradient_clipping, (int, float))
            or gradient_clipping < 0
        ):
            raise MisconfigurationError(
                f"gradient_clipping must be a number >= 0 (0 turns clipping off), got {gradient_clipping!r}."
            )
        _put(result, ("gradient_clipping",), float(gradient_clipping), "gradient_clipping")
    for key, value in _DEFAULTS.items():
        if key == "train_micro_batch_size_per_gpu" and "train_batch_size" in result:
            continue  # DeepSpeed derives the micro batch from the user's total batch size
        result.setdefault(key, value)
    _default_accumulation_mode(result)
    validate_config(result)
    return result


def _default_accumulation_mode(config: dict[str, Any]) -> None:
    """Who decides when the optimizer steps: the training loop, unless DeepSpeed is told to count micro-batches.

    With ``gradient_accumulation_steps`` > 1 DeepSpeed counts ``optimizer.step()`` calls and steps every
    N-th (its own scheme). Otherwise every ``optimizer.step()`` is a step and several ``fabric.backward``
    calls before it accumulate, as with DDP (``managed_gradient_accumulation: false``).
    """
    if "managed_gradient_accumulation" not in config:
        config["managed_gradient_accumulation"] = int(config.get("gradient_accumulation_steps") or 1) > 1


def zero_stage(config: Mapping[str, Any]) -> int:
    """The ZeRO stage ``config`` asks for (DeepSpeed's default is 0)."""
    zero = config.get("zero_optimization") or {}
    return int(zero.get("stage", 0)) if isinstance(zero, Mapping) else 0


def offload_device(config: Mapping[str, Any], section: str) -> str | None:
    """``"cpu"``/``"nvme"`` when ``zero_optimization.<section>`` offloads, else ``None``."""
    zero = config.get("zero_optimization") or {}
    entry = zero.get(section) if isinstance(zero, Mapping) else None
    if not isinstance(entry, Mapping):
        return None
    device = entry.get("device")
    return None if device in (None, "none") else str(device)


def validate_config(config: Mapping[str, Any]) -> None:
    """Refuse the combinations DeepSpeed cannot run, with the reason (before any process starts)."""
    stage = zero_stage(config)
    if stage not in STAGES:
        raise MisconfigurationError(
            f"zero_optimization.stage={stage!r} is not a ZeRO stage; choose one of {', '.join(map(str, STAGES))}."
        )
    zero = config.get("zero_optimization") or {}
    for section in ("offload_optimizer", "offload_param"):
        device = offload_device(config, section)
        if device is not None and device not in OFFLOAD_DEVICES:
            raise MisconfigurationError(
                f"zero_optimization.{section}.device={device!r} is not valid; choose 'none', {', '.join(map(repr, OFFLOAD_DEVICES))}."
            )
    if offload_device(config, "offload_param") is not None and stage != 3:
        raise MisconfigurationError(
            f"Offloading parameters needs ZeRO stage 3 (parameters are only partitioned there), but stage is {stage}. "
            "Use stage=3 (strategy='deepspeed_stage_3_offload'), or offload only the optimizer."
        )
    if offload_device(config, "offload_optimizer") is not None and stage == 0:
        raise MisconfigurationError(
            "Offloading the optimizer needs ZeRO stage 1, 2 or 3 (the offloaded optimizer is ZeRO's), but stage is 0."
        )
    managed = bool(config.get("managed_gradient_accumulation", True))
    if not managed:
        if int(config.get("gradient_accumulation_steps") or 1) > 1:
            raise MisconfigurationError(
                "managed_gradient_accumulation=false lets the training loop decide when to step; it cannot be combined "
                "with gradient_accumulation_steps > 1 (DeepSpeed counting micro-batches). Choose one."
            )
        if stage < 2 and isinstance(zero, Mapping) and zero.get("overlap_comm"):
            raise MisconfigurationError(
                f"overlap_comm=True needs ZeRO stage 2 or 3 when the training loop owns the step boundary (stage is {stage}): "
                "stages 0 and 1 reduce gradients in optimizer.step(), so there is nothing to overlap. Drop overlap_comm."
            )
    for dtype_section in ("fp16", "bf16"):
        section = config.get(dtype_section)  # type: ignore[assignment]
        if section is not None and not isinstance(section, Mapping):
            raise MisconfigurationError(
                f"DeepSpeed config entry {dtype_section!r} must be a dict like {{'enabled': true}}, got {section!r}."
            )
    if section_enabled(config, "fp16") and section_enabled(config, "bf16"):
        raise MisconfigurationError("The DeepSpeed config enables both fp16 and bf16; enable one.")


def section_enabled(config: Mapping[str, Any], name: str) -> bool:
    """Whether the ``fp16``/``bf16`` section of ``config`` is switched on."""
    section = config.get(name)
    return isinstance(section, Mapping) and bool(section.get("enabled", False))
