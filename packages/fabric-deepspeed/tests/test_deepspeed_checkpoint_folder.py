"""Replacing a checkpoint folder so that a crash at any point leaves the previous one readable."""

from __future__ import annotations

from fabric_deepspeed.checkpoint_folder import (
    backup_path,
    commit_staging,
    prepare_staging,
    recover_interrupted_swap,
    staging_path,
)


def _write(folder, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest").write_text(text)


def test_commit_replaces_the_previous_checkpoint_and_leaves_nothing_behind(tmp_path) -> None:
    target = tmp_path / "ckpt"
    _write(target, "old")
    staging = prepare_staging(target)
    _write(staging, "new")
    assert (target / "latest").read_text() == "old"  # untouched until the new one is complete
    commit_staging(target)
    assert (target / "latest").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_half_written_staging_folder_from_a_crash_is_discarded(tmp_path) -> None:
    target = tmp_path / "ckpt"
    _write(target, "old")
    _write(staging_path(target), "partial")
    staging = prepare_staging(target)
    assert not staging.exists()  # DeepSpeed creates it afresh
    assert (target / "latest").read_text() == "old"


def test_a_crash_between_the_two_renames_gets_the_previous_checkpoint_back(tmp_path) -> None:
    target = tmp_path / "ckpt"
    _write(backup_path(target), "old")  # target was moved aside, the new one not yet moved in
    _write(staging_path(target), "new-but-unconfirmed")
    recover_interrupted_swap(target)
    assert (target / "latest").read_text() == "old"
    prepare_staging(target)
    assert not backup_path(target).exists()


def test_a_plain_file_at_the_path_is_replaced_too(tmp_path) -> None:
    target = tmp_path / "ckpt"
    target.write_text("single-file checkpoint")
    _write(prepare_staging(target), "new")
    commit_staging(target)
    assert (target / "latest").read_text() == "new"
