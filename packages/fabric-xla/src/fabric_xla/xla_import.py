"""Importing torch_xla when XLA is really used, turning every way it can fail into one clear error."""

from __future__ import annotations

from types import ModuleType

from fabric_xla.errors import XLAUnavailableError
from fabric_xla.probe import INSTALL_COMMAND, installation_problem, torch_xla_version


def check_installation() -> None:
    """Raise ``XLAUnavailableError`` when torch_xla is missing or built for another torch (metadata only)."""
    problem = installation_problem()
    if problem is not None:
        raise XLAUnavailableError(problem)


def require_torch_xla() -> ModuleType:
    """Import and return ``torch_xla``, or raise ``XLAUnavailableError`` saying what to install."""
    check_installation()
    try:
        import torch_xla
        import torch_xla.core.xla_model
        import torch_xla.runtime
    except (ImportError, OSError) as err:
        import torch

        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise XLAUnavailableError(
            f"torch_xla {torch_xla_version()} is installed beside torch {torch.__version__} but cannot be loaded "
            f"({first_line}). Reinstall the matching pair: {INSTALL_COMMAND} --force-reinstall"
        ) from err
    return torch_xla
