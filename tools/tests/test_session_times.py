"""tools/session_times.py: the table CI prints after `nox --report`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import session_times


def _report(tmp_path: Path) -> Path:
    report = {
        "result": 0,
        "sessions": [
            {"name": "core", "result": "success", "duration": 65.0, "reason": None},
            {"name": "cpu", "result": "success", "duration": 754.2, "reason": None},
            {"name": "cuda", "result": "skipped", "duration": 0.4, "reason": "this machine has no NVIDIA GPU"},
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    return path


def test_table_lists_sessions_slowest_first_with_their_disk(tmp_path: Path, capsys) -> None:
    envdir = tmp_path / "envs"
    (envdir / "cpu").mkdir(parents=True)
    (envdir / "cpu" / "blob").write_bytes(b"x" * 3_000_000)
    assert session_times.main([str(_report(tmp_path)), "--envdir", str(envdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["session", "cpu", "core", "cuda", "total"]
    assert lines[1].split()[1:4] == ["12:34", "0.0", "GB"]  # 3 MB rounds to 0.0 GB
    assert "skipped (this machine has no NVIDIA GPU)" in lines[3]
    assert lines[-2].split()[1] == "13:39" and lines[-2].endswith("3 sessions")
    assert "hardlinks once" in lines[-1]


def test_folder_bytes_counts_nested_files_and_a_missing_folder_is_empty(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_bytes(b"y" * 10_000)
    assert session_times.folder_bytes(tmp_path) >= 10_000
    assert session_times.folder_bytes(tmp_path / "missing") == 0


def test_the_install_report_adds_each_sessions_install_time(tmp_path: Path, capsys) -> None:
    installs = tmp_path / "install.json"
    installs.write_text(json.dumps({"sessions": [{"name": "cpu", "result": "success", "duration": 12.0}]}))
    no_envs = str(tmp_path / "no-envs")
    assert session_times.main([str(_report(tmp_path)), "--install-report", str(installs), "--envdir", no_envs]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["session", "install", "time"]
    assert lines[1].split()[:3] == ["cpu", "0:12", "12:34"]
    assert lines[2].split()[:2] == ["core", "1:05"]  # no install line for it: the column stays empty
    assert lines[-1].split()[:3] == ["total", "0:12", "13:39"]


def test_a_file_hardlinked_into_two_environments_counts_once_in_the_total(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "core" / "libtorch.so").write_bytes(b"t" * 4_000_000)
    os.link(tmp_path / "core" / "libtorch.so", tmp_path / "cpu" / "libtorch.so")
    alone = session_times.folder_bytes(tmp_path / "cpu")
    assert alone >= 4_000_000  # what the environment would take by itself
    assert session_times.folder_bytes(tmp_path) < 2 * alone  # the shared copy once


def test_an_unreadable_report_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert session_times.main([str(tmp_path / "nope.json")]) == 1
    assert "cannot read the nox report" in capsys.readouterr().err
