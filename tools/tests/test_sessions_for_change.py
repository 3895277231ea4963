"""tools/sessions_for_change.py: the nox sessions a change needs, read from the noxfile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import sessions_for_change as sfc

from conftest import REPO

NOXFILE = '''
import nox

def _install(session, *packages):
    session.install("-e", "packages/fabric-core", *[f"packages/{p}" for p in packages])

def _pytest(session, *paths):
    session.run("pytest", *paths)

@nox.session
def core(session):
    """Core unit tests (this docstring names packages/fabric-loggers but is not a dependency)."""
    _install(session)
    _pytest(session, "packages/fabric-core/tests")

@nox.session
def loggers(session):
    _install(session, "fabric-loggers")
    _pytest(session, f"packages/{'fabric-loggers'}/tests")

@nox.session(name="docs-build")
def docs(session):
    _install(session, "fabric-loggers")
    session.run("mkdocs", "build", "-f", "docs/mkdocs.yml")

@nox.session
def lint(session):
    session.run("ruff", "check", ".")

@nox.session(default=False)
def bench(session):
    _install(session)
    session.run("python", "benchmarks/run_all.py")
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for folder in ("packages/fabric-core/tests", "packages/fabric-loggers/tests", "docs", "benchmarks", "tools"):
        (tmp_path / folder).mkdir(parents=True)
    for dist in ("fabric-core", "fabric-loggers"):
        (tmp_path / "packages" / dist / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "docs" / "mkdocs.yml").write_text("site_name: x\n")
    (tmp_path / "benchmarks" / "run_all.py").write_text("")
    (tmp_path / "noxfile.py").write_text(NOXFILE)
    return tmp_path


def needed(repo: Path, *files: str) -> list[str]:
    sessions = sfc.parse_noxfile(repo / "noxfile.py")
    return list(sfc.sessions_for(list(files), sessions)[0])


def test_sessions_and_their_paths_are_read_from_the_noxfile(repo: Path) -> None:
    sessions = {s.name: s for s in sfc.parse_noxfile(repo / "noxfile.py")}
    assert list(sessions) == ["core", "loggers", "docs-build", "lint", "bench"]
    assert sessions["core"].paths == {"packages/fabric-core/", "packages/fabric-core/tests/"}  # via the _install helper
    assert sessions["loggers"].paths == {"packages/fabric-core/", "packages/fabric-loggers/"}
    assert sessions["docs-build"].paths == {"packages/fabric-core/", "packages/fabric-loggers/", "docs/"}
    assert sessions["bench"].default is False and sessions["bench"].paths == {"packages/fabric-core/", "benchmarks/"}


def test_core_change_runs_every_session(repo: Path) -> None:
    assert needed(repo, "packages/fabric-core/src/fabric_core/fabric.py") == [
        "core",
        "loggers",
        "docs-build",
        "lint",
        "bench",
    ]


def test_backend_change_runs_the_sessions_that_install_it(repo: Path) -> None:
    assert needed(repo, "packages/fabric-loggers/src/fabric_loggers/csv_logger.py") == ["loggers", "docs-build", "lint"]


def test_docs_page_runs_docs_only_and_lint_only_sees_python(repo: Path) -> None:
    assert needed(repo, "docs/index.md") == ["docs-build"]
    assert needed(repo, "README.md") == []
    assert needed(repo, "tools/x.py") == ["lint"]


def test_noxfile_and_root_config_run_everything(repo: Path) -> None:
    assert needed(repo, "noxfile.py") == ["core", "loggers", "docs-build", "lint", "bench"]
    assert needed(repo, "pyproject.toml") == needed(repo, "noxfile.py")


def test_main_prints_default_sessions_and_mentions_optional_ones(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sfc.main(["--no-nox", "--root", str(repo), "benchmarks/run_all.py", "README.md"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["lint"]
    assert "bench" in captured.err and "no nox session covers: README.md" in captured.err

    assert sfc.main(["--no-nox", "--all", "--json", "--root", str(repo), "benchmarks/run_all.py"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sessions"] == ["lint"] and report["optional"] == ["bench"]
    assert report["reasons"]["bench"] == ["benchmarks/run_all.py"]


def test_files_come_from_git_when_none_are_given(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "base")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "everything")
    (repo / "docs" / "index.md").write_text("# hi\n")
    assert sfc.changed_files(repo, None) == ["docs/index.md"]
    assert "noxfile.py" in sfc.changed_files(repo, "HEAD~1")
    assert sfc.main(["--no-nox", "--root", str(repo)]) == 0
    assert capsys.readouterr().out.split() == ["docs-build"]


def test_the_real_noxfile_maps_a_loggers_change_to_loggers_integration_and_docs() -> None:
    sessions = sfc.parse_noxfile(REPO / "noxfile.py")
    chosen, _ = sfc.sessions_for(["packages/fabric-loggers/src/fabric_loggers/tensorboard.py"], sessions)
    assert {"loggers", "integration", "docs"} <= set(chosen)
    assert "core" not in chosen and "xla_cpu" not in chosen
    everything, _ = sfc.sessions_for(["packages/fabric-core/src/fabric_core/fabric.py"], sessions)
    assert set(everything) == {s.name for s in sessions}
