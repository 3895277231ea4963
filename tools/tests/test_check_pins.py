"""tools/check_pins.py: every pin between our distributions admits the sibling's current version."""

from __future__ import annotations

from pathlib import Path

import check_pins
import pytest
from workspace import discover

from conftest import REPO, write_dist


def set_version(root: Path, dist: str, version: str) -> None:
    about = root / "packages" / dist / "src" / dist.replace("-", "_") / "__about__.py"
    about.write_text(about.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{version}"'))


def test_consistent_workspace_passes(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_pins.check(workspace) == []
    assert check_pins.main(["--root", str(workspace)]) == 0
    assert "ok" in capsys.readouterr().out


def test_core_extra_that_excludes_the_backend_version_fails_naming_file_pin_and_version(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_version(workspace, "fabric-cuda", "0.2.0")

    problems = check_pins.check(workspace)

    assert len(problems) == 2  # the "cuda" extra and the "all" extra
    for problem, extra in zip(sorted(problems), ["all", "cuda"]):
        assert problem.startswith(f"packages/fabric-core/pyproject.toml [optional-dependencies.{extra}]")
        assert "'fabric-cuda>=0.1.0,<0.2' does not admit fabric-cuda 0.2.0" in problem
        assert "packages/fabric-cuda/src/fabric_cuda/__about__.py" in problem
    assert check_pins.main(["--root", str(workspace)]) == 1
    assert "does not admit fabric-cuda 0.2.0" in capsys.readouterr().err


def test_backend_pin_on_core_that_excludes_core_version_fails(workspace: Path) -> None:
    set_version(workspace, "fabric-core", "0.2.0")

    problems = check_pins.check(workspace)

    assert sorted(problems) == [
        "packages/fabric-cuda/pyproject.toml [dependencies]: 'fabric-core>=0.1.0,<0.2' does not admit fabric-core 0.2.0 "
        "(the version in packages/fabric-core/src/fabric_core/__about__.py)",
        "packages/fabric-loggers/pyproject.toml [dependencies]: 'fabric-core>=0.1.0,<0.2' does not admit fabric-core 0.2.0 "
        "(the version in packages/fabric-core/src/fabric_core/__about__.py)",
    ]


def test_prerelease_inside_the_range_is_admitted(workspace: Path) -> None:
    set_version(workspace, "fabric-cuda", "0.1.1rc1")
    assert check_pins.check(workspace) == []


def test_all_extra_must_list_every_backend(workspace: Path) -> None:
    write_dist(
        workspace,
        "fabric-core",
        "0.1.0",
        extras={
            "cuda": ["fabric-cuda>=0.1.0,<0.2"],
            "loggers": ["fabric-loggers>=0.1.0,<0.2"],
            "all": ["fabric-cuda>=0.1.0,<0.2"],
        },
        api=None,
    )
    assert check_pins.check(workspace) == [
        "packages/fabric-core/pyproject.toml [optional-dependencies.all]: does not list fabric-loggers "
        "(every backend belongs in 'all')"
    ]


def test_new_backend_without_an_extra_of_its_own_is_reported(workspace: Path) -> None:
    write_dist(workspace, "fabric-xla", "0.1.0", ["fabric-core>=0.1.0,<0.2"])
    problems = check_pins.check(workspace)
    assert any("does not list fabric-xla" in p for p in problems)
    assert any("has no extra 'xla' that installs fabric-xla" in p for p in problems)


def test_pin_on_a_sibling_the_repo_does_not_have(workspace: Path) -> None:
    write_dist(workspace, "fabric-cuda", "0.1.0", ["fabric-core>=0.1.0,<0.2", "fabric-nccl>=1"])
    assert check_pins.check(workspace) == [
        "packages/fabric-cuda/pyproject.toml [dependencies]: 'fabric-nccl>=1' names fabric-nccl, "
        "which no packages/*/pyproject.toml defines"
    ]


def test_backend_without_a_core_dependency(workspace: Path) -> None:
    write_dist(workspace, "fabric-loggers", "0.1.0", ["tensorboard"], plugins=False)
    assert check_pins.check(workspace) == [
        "packages/fabric-loggers/pyproject.toml [dependencies]: fabric-loggers does not depend on fabric-core "
        '(add "fabric-core>=X,<Y")'
    ]


def test_plugin_api_newer_than_core_serves(workspace: Path) -> None:
    write_dist(workspace, "fabric-cuda", "0.1.0", ["fabric-core>=0.1.0,<0.2"], api="1.1")
    [problem] = check_pins.check(workspace)
    assert problem.startswith("packages/fabric-cuda/src/fabric_cuda/__about__.py: plugin interface '1.1'")
    assert "'1.0'" in problem


def test_backend_registering_plugins_without_api_version(workspace: Path) -> None:
    write_dist(workspace, "fabric-cuda", "0.1.0", ["fabric-core>=0.1.0,<0.2"], api=None)
    [problem] = check_pins.check(workspace)
    assert "registers plugins but no" in problem and "fabric_core.plugin_api" in problem


def test_copy_of_the_real_pyprojects_catches_a_version_bump_without_pins(repo_copy: Path) -> None:
    before = check_pins.check(repo_copy)
    set_version(repo_copy, "fabric-loggers", "0.2.0")

    new = [p for p in check_pins.check(repo_copy) if p not in before]

    # every extra of core that pins fabric-loggers (loggers, all, and the tracker extras) is named
    pinning = {
        extra
        for extra, requirements in discover(repo_copy)["fabric-core"].extras.items()
        if any(r.startswith("fabric-loggers") for r in requirements)
    }
    assert {"loggers", "all"} <= pinning
    assert {p.split(":")[0] for p in new} == {
        f"packages/fabric-core/pyproject.toml [optional-dependencies.{extra}]" for extra in pinning
    }
    assert all(">=0.1.0,<0.2' does not admit fabric-loggers 0.2.0" in p for p in new)


def test_the_repository_pins_are_consistent() -> None:
    assert check_pins.check(REPO) == []
