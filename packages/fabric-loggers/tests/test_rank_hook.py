"""Fabric's rank hook: the rank Fabric announces decides who writes, whatever the environment says."""

from __future__ import annotations

from fabric_loggers import CSVLogger, TensorBoardLogger


def test_rank_announced_by_fabric_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    for cls in (CSVLogger, TensorBoardLogger):
        quiet = cls(tmp_path / cls.__name__, name="run")
        quiet.set_global_rank(1)
        quiet.log_metrics({"a": 1.0}, step=0)
        quiet.finalize("success")
        assert not (tmp_path / cls.__name__).exists()
        writer = cls(tmp_path / cls.__name__, name="run")
        monkeypatch.setenv("RANK", "3")  # the environment is overruled by Fabric's answer
        writer.set_global_rank(0)
        writer.log_metrics({"a": 1.0}, step=0)
        writer.finalize("success")
        monkeypatch.delenv("RANK")
        assert (tmp_path / cls.__name__ / "run").is_dir()
