"""The fault suite: real processes that crash, hang, get killed, or read damaged files.

Run it with ``python -m pytest packages/fabric-core/tests/faults`` (every test here carries the
``faults`` marker, so ``-m "not faults"`` leaves it out of a wider run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault-injection suite (real processes, kills, damaged files)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            # Several jobs of fresh interpreters per test, each bounded by its own hang guard: pytest's
            # default 300 s must not end a test first on a loaded machine. A test's own mark still wins.
            item.add_marker(pytest.mark.timeout(900))
