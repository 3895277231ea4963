"""Checks that need the GPU itself, run once the worker has selected its device.

They ask the CUDA runtime (compute capability, bf16 support), so they must not run while the plan is
resolved in the launching process. The decisions are pure functions; ``check_precision_on_device``
gathers the facts from torch and applies them.
"""

from __future__ import annotations

import warnings

import torch
from fabric_core.errors import MisconfigurationError

TF32_HINT = (
    "This GPU (compute capability {major}.{minor}) has Tensor Cores that run float32 matrix multiplications much "
    "faster in TensorFloat-32, and precision='32-true' leaves them unused. To trade a little precision for "
    "speed, call torch.set_float32_matmul_precision('high') (or 'medium') before training."
)


def matmul_precision_untouched() -> bool:
    """Whether float32 matmuls run at full precision only because nobody chose otherwise."""
    matmul = torch.backends.cuda.matmul
    try:
        setting = getattr(matmul, "fp32_precision", None)
        if setting is not None:
            # torch >= 2.9: "none" is the untouched default; "ieee" means someone asked for full precision.
            return setting == "none"
        return torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # the old and new APIs were mixed: someone did choose
        return False


def wants_tf32_hint(precision: str | None, capability: tuple[int, int], untouched: bool) -> bool:
    """Suggest TF32 for 32-true on Ampere or newer when the user has not set the matmul precision."""
    return precision == "32-true" and capability[0] >= 8 and untouched


def bf16_problem(precision: str | None, native: bool, emulated: bool) -> str | None:
    """``"error"`` when bf16 cannot run, ``"slow"`` when only emulated, ``None`` when fine or not bf16."""
    if precision not in ("bf16-mixed", "bf16-true"):
        return None
    if native:
        return None
    return "slow" if emulated else "error"


def check_precision_on_device(device: torch.device, precision: str | None) -> None:
    """Raise for a bf16 precision the GPU cannot run; warn for emulated bf16 and unused TF32."""
    capability = torch.cuda.get_device_capability(device)
    if precision in ("bf16-mixed", "bf16-true"):
        problem = bf16_problem(
            precision,
            native=torch.cuda.is_bf16_supported(including_emulation=False),
            emulated=torch.cuda.is_bf16_supported(including_emulation=True),
        )
        name = torch.cuda.get_device_name(device)
        if problem == "error":
            raise MisconfigurationError(
                f"precision={precision!r} needs bfloat16, which {name} (compute capability {capability[0]}.{capability[1]}) "
                "cannot run. Use precision='16-mixed' (float16 with loss scaling) or '32-true'."
            )
        if problem == "slow":
            warnings.warn(
                f"precision={precision!r}: {name} (compute capability {capability[0]}.{capability[1]}) has no native "
                "bfloat16 support and emulates it slowly. precision='16-mixed' is usually much faster on this GPU.",
                UserWarning,
                stacklevel=2,
            )
    if wants_tf32_hint(precision, capability, matmul_precision_untouched()):
        # warnings' default filter shows this once per process.
        warnings.warn(TF32_HINT.format(major=capability[0], minor=capability[1]), UserWarning, stacklevel=2)
