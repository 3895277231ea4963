"""tools/bump_version.py: sets the version and moves every pin on it so that check_pins passes."""

from __future__ import annotations

from pathlib import Path

import bump_version
import check_pins
import pytest
from workspace import discover


def read(root: Path, relative: str) -> str:
    return (root / relative).read_text()


def test_bumping_a_backend_moves_core_extras_and_passes_the_check(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bump_version.main(["fabric-cuda", "0.2.0", "--root", str(workspace)]) == 0

    assert discover(workspace)["fabric-cuda"].version == "0.2.0"
    core = read(workspace, "packages/fabric-core/pyproject.toml")
    assert 'cuda = ["fabric-cuda>=0.2.0,<0.3"]' in core
    assert 'all = ["fabric-cuda>=0.2.0,<0.3", "fabric-loggers>=0.1.0,<0.2"]' in core
    assert check_pins.check(workspace) == []
    out = capsys.readouterr().out
    assert "changed packages/fabric-cuda/src/fabric_cuda/__about__.py" in out
    assert '"fabric-cuda>=0.1.0,<0.2" -> "fabric-cuda>=0.2.0,<0.3"' in out


def test_bumping_core_moves_every_backend_dependency(workspace: Path) -> None:
    assert bump_version.main(["core", "0.2.0", "--root", str(workspace)]) == 0

    for backend in ("fabric-cuda", "fabric-loggers"):
        assert '"fabric-core>=0.2.0,<0.3"' in read(workspace, f"packages/{backend}/pyproject.toml")
    assert '__version__ = "0.2.0"' in read(workspace, "packages/fabric-core/src/fabric_core/__about__.py")
    assert check_pins.check(workspace) == []


def test_keep_compatible_leaves_pins_that_admit_the_new_version(workspace: Path) -> None:
    assert bump_version.main(["fabric-core", "0.1.5", "--keep-compatible", "--root", str(workspace)]) == 0
    assert '"fabric-core>=0.1.0,<0.2"' in read(workspace, "packages/fabric-cuda/pyproject.toml")
    assert check_pins.check(workspace) == []


def test_dry_run_writes_nothing(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_text() for p in workspace.rglob("*") if p.is_file()}
    assert bump_version.main(["fabric_loggers", "0.3.0", "--dry-run", "--root", str(workspace)]) == 0
    assert {p: p.read_text() for p in workspace.rglob("*") if p.is_file()} == before
    assert "would change" in capsys.readouterr().out


def test_markers_and_extras_of_a_pin_are_kept() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    pin = Requirement('fabric-cuda[nvml]>=0.1,<0.2; sys_platform == "linux"')
    assert bump_version.new_pin(pin, Version("1.4.2")) == 'fabric-cuda[nvml]>=1.4.2,<1.5; sys_platform == "linux"'


def test_bad_input_is_refused_with_the_choices(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bump_version.main(["fabric-tpu", "0.2.0", "--root", str(workspace)])
    assert "fabric-core, fabric-cuda, fabric-loggers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bump_version.main(["fabric-cuda", "two", "--root", str(workspace)])
    with pytest.raises(SystemExit):
        bump_version.main(["fabric-cuda", "0.0.9", "--root", str(workspace)])
    assert "lower than" in capsys.readouterr().err


def test_real_pyprojects_bump_of_every_package_keeps_the_check_clean(repo_copy: Path) -> None:
    before = check_pins.check(repo_copy)
    for name in discover(repo_copy):
        assert bump_version.main([name, "0.4.0", "--root", str(repo_copy)]) in (0, 1)
    dists = discover(repo_copy)
    assert {d.version for d in dists.values()} == {"0.4.0"}
    after = check_pins.check(repo_copy)
    assert all("does not admit" not in p for p in after)
    assert len(after) <= len(before)
