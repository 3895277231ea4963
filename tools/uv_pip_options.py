#!/usr/bin/env python3
"""Translate pip's configuration into the `uv pip install` options that mean the same.

uv does not read pip's configuration files or ``PIP_*`` variables. Where pip is configured to find a
local torch build (``find-links``), extra indexes or a constraints file, a uv install without them
resolves differently (for example a CUDA torch from PyPI, several GB). The noxfile installs with uv
when it is present and passes these options, so both installers see the same sources.
Standard library only: the noxfile loads this file.

Example:
    python tools/uv_pip_options.py      # prints the options and variables for this machine
"""

from __future__ import annotations

import ast
import subprocess
import sys

#: pip option -> uv flag; pip's value is a whitespace-separated list, each item gets its own flag
_FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
#: pip option -> environment variable uv reads for the same setting
_VARIABLES = {"cert": "SSL_CERT_FILE", "default-timeout": "UV_HTTP_TIMEOUT", "timeout": "UV_HTTP_TIMEOUT"}
#: pip's precedence: environment variables over the [install] section over [global]
_SECTION_RANK = {":env:": 0, "install": 1, "global": 2}
_TRUE = {"1", "true", "yes", "on"}


def pip_settings(config_list: str) -> dict[str, str]:
    """The effective value of each option in ``pip config list`` output (``section.key='value'`` lines)."""
    best: dict[str, tuple[int, str]] = {}
    for line in config_list.splitlines():
        name, sep, raw = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in _SECTION_RANK:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        rank = _SECTION_RANK[section]
        if key not in best or rank < best[key][0]:
            best[key] = (rank, str(value))
    return {key: value for key, (_, value) in best.items()}


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The ``uv pip install`` flags and environment variables equivalent to pip's ``settings``.

    pip merges every index and takes the best version; uv's default stops at the first index that has
    the package, so ``--index-strategy unsafe-best-match`` keeps pip's choice. pip also compiles what it
    installs to bytecode (unless ``no-compile``); uv leaves that to the first import, which cannot write
    its cache where ``PYTHONDONTWRITEBYTECODE`` is set (as on this project's CI image): every process
    then compiles what it imports, ``import torch`` 4.0 s of CPU instead of 2.0 s. ``--compile-bytecode``
    keeps pip's behaviour (about 18 s more per environment holding torch, once).
    """
    flags = ["--index-strategy", "unsafe-best-match"]
    for key, flag in _FLAGS.items():
        for item in settings.get(key, "").split():
            flags += [flag, item]
    if settings.get("no-index", "").lower() in _TRUE:
        flags.append("--no-index")
    if settings.get("no-compile", "").lower() not in _TRUE:
        flags.append("--compile-bytecode")
    variables = {var: settings[key] for key, var in _VARIABLES.items() if settings.get(key)}
    return flags, variables


def read_pip_config(python: str = sys.executable) -> str:
    """``pip config list`` of ``python`` (empty when that interpreter has no pip)."""
    try:
        result = subprocess.run(
            [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def main() -> int:
    flags, variables = uv_options(pip_settings(read_pip_config()))
    for name, value in variables.items():
        print(f"{name}={value}")
    print(" ".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
