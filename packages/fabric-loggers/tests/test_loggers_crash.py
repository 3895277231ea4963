"""A training process killed with SIGKILL loses at most what it logged since the last flush, and its
files stay readable (csv module, TensorBoard's EventAccumulator) and can be continued."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from fabric_loggers import CSVLogger
from loggers_testing import event_accumulator, read_csv, scalars, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

_LOG_FLUSH_LOG = """
import sys, time
from fabric_loggers import CSVLogger, TensorBoardLogger
cls = {"csv": CSVLogger, "tb": TensorBoardLogger}[sys.argv[2]]
logger = cls(sys.argv[1], name="run", flush_logs_every_n_steps=None)
for step in range(5):
    logger.log_metrics({"loss": step * 1.5}, step=step)
logger.save()
for step in range(5, 8):
    logger.log_metrics({"loss": step * 1.5, "late": 1.0}, step=step)
print("READY", flush=True)
time.sleep(600)
"""

_FLUSH_EVERY_STEP_FOREVER = """
import sys
from fabric_loggers import CSVLogger, TensorBoardLogger
cls = {"csv": CSVLogger, "tb": TensorBoardLogger}[sys.argv[2]]
logger = cls(sys.argv[1], name="run", flush_logs_every_n_steps=1)
step = 0
while True:
    metrics = {"v": step * 0.5}
    if step % 37 == 0:
        metrics[f"c{step // 37}"] = step  # a new column now and then: the CSV header grows (atomic rewrite)
    logger.log_metrics(metrics, step=step)
    step += 1
"""


def _start(script: str, root: str, kind: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, root, kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def _wait_ready(process: subprocess.Popen) -> None:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    if line != ["READY\n"]:
        process.kill()
        pytest.fail(f"the child did not get ready: {line!r} {process.stderr.read()}")


@pytest.mark.parametrize("kind", ["csv", "tb"])
def test_sigkill_loses_at_most_what_came_after_the_last_flush(tmp_path, kind):
    process = _start(_LOG_FLUSH_LOG, str(tmp_path), kind)
    _wait_ready(process)
    _kill(process)
    log_dir = str(tmp_path / "run" / "version_0")
    flushed = [(step, step * 1.5) for step in range(5)]
    if kind == "csv":
        header, rows = read_csv(os.path.join(log_dir, "metrics.csv"))
        # Nothing was flushed after step 4: exactly the flushed rows, the later column never reached disk.
        assert header == ["loss", "step"]
        assert [(int(r["step"]), float(r["loss"])) for r in rows] == flushed
    else:
        # TensorBoard's writer thread may have written some later events on its own; the flushed ones are all there.
        logged = scalars(log_dir, "loss")
        assert logged[:5] == flushed
        assert logged[5:] == [(step, step * 1.5) for step in range(5, 5 + len(logged) - 5)]


@pytest.mark.parametrize("kind", ["csv", "tb"])
def test_sigkill_at_any_moment_leaves_whole_rows_only(tmp_path, kind):
    process = _start(_FLUSH_EVERY_STEP_FOREVER, str(tmp_path), kind)
    log_dir = tmp_path / "run" / "version_0"
    try:
        if kind == "csv":
            path = log_dir / "metrics.csv"
            wait_for(lambda: path.exists() and path.read_bytes().count(b"\n") > 400, 120, "400 flushed rows")
        else:
            wait_for(
                lambda: log_dir.exists() and any(p.stat().st_size > 40_000 for p in log_dir.iterdir()), 120, "events"
            )
    finally:
        _kill(process)

    if kind == "csv":
        header, rows = read_csv(str(log_dir / "metrics.csv"))
        assert header[-2:] == ["step", "v"]  # sorted by name: c0, c1, ..., step, v
        assert [int(r["step"]) for r in rows] == list(range(len(rows)))
        assert all(float(r["v"]) == int(r["step"]) * 0.5 for r in rows)
        for column in header[:-2]:  # every grown column holds its own value in the row that introduced it
            k = int(column[1:])
            assert [r[column] for r in rows if r[column]] == [str(k * 37)]
        # A new run in the same folder starts a fresh metrics.csv and keeps the killed run's file whole.
        resumed = CSVLogger(tmp_path, name="run", version=0)
        with pytest.warns(UserWarning, match="metrics.previous-1.csv"):
            resumed.log_metrics({"v": -1.0}, step=len(rows))
        resumed.finalize("success")
        _, after = read_csv(str(log_dir / "metrics.csv"))
        assert [(r["step"], r["v"]) for r in after] == [(str(len(rows)), "-1.0")]
        assert read_csv(str(log_dir / "metrics.previous-1.csv"))[1] == rows
    else:
        accumulator = event_accumulator(str(log_dir))
        events = accumulator.Scalars("v")
        assert len(events) > 100
        assert [e.step for e in events] == list(range(len(events)))
        assert all(e.value == e.step * 0.5 for e in events)
