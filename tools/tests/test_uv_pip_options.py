"""tools/uv_pip_options.py: pip's configuration handed to uv, so both install the same builds."""

from __future__ import annotations

import uv_pip_options

# `pip config list` on a machine like CI's: a local torch wheel folder, two local indexes, a constraint file.
CONFIG = """\
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/elsewhere'
"""


def test_every_source_pip_uses_becomes_a_uv_flag() -> None:
    flags, variables = uv_pip_options.uv_options(uv_pip_options.pip_settings(CONFIG))
    pairs = list(zip(flags[::2], flags[1::2], strict=False))
    assert ("--find-links", "/opt/wheels") in pairs  # the environment variable wins over the file, as in pip
    assert ("--find-links", "/elsewhere") not in pairs
    assert ("--extra-index-url", "file:///opt/pypi/simple") in pairs
    assert ("--extra-index-url", "file:///opt/pypi-more/simple") in pairs
    assert ("--constraint", "/etc/xdg/pip/constraints.txt") in pairs
    assert ("--index-strategy", "unsafe-best-match") in pairs  # pip's: the best version over all indexes
    assert variables == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "UV_HTTP_TIMEOUT": "180"}


def test_install_section_beats_global_and_no_index_is_kept() -> None:
    settings = uv_pip_options.pip_settings(
        "global.index-url='https://a/simple'\ninstall.index-url='https://b/simple'\ninstall.no-index='true'\n"
    )
    flags, _ = uv_pip_options.uv_options(settings)
    assert flags[flags.index("--index-url") + 1] == "https://b/simple"
    assert "--no-index" in flags


def test_no_pip_configuration_gives_pips_defaults() -> None:
    assert uv_pip_options.uv_options(uv_pip_options.pip_settings("")) == (
        ["--index-strategy", "unsafe-best-match", "--compile-bytecode"],  # pip compiles what it installs
        {},
    )


def test_no_compile_in_pips_configuration_is_kept() -> None:
    flags, _ = uv_pip_options.uv_options(uv_pip_options.pip_settings("install.no-compile='true'\n"))
    assert "--compile-bytecode" not in flags


def test_read_pip_config_without_pip_is_empty(tmp_path) -> None:
    assert uv_pip_options.read_pip_config(str(tmp_path / "no-python")) == ""
