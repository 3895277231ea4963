"""A DeepSpeed op build killed midway leaves torch's lock file; later builds recover instead of hanging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from fabric_deepspeed.extension_locks import find_locks, is_stale, recover_stale_locks, watch_extension_locks

# A builder exactly as torch.utils.cpp_extension runs one: FileBaton.try_acquire() holds the lock open
# during the build; here the "build" is a sleep, and the process is SIGKILLed in the middle of it.
BUILDER = textwrap.dedent(
    """
    import sys, time
    from torch.utils.file_baton import FileBaton
    baton = FileBaton(sys.argv[1])
    assert baton.try_acquire()
    print("BUILDING", flush=True)
    time.sleep(600)
    """
)
WAITER = textwrap.dedent(
    """
    import sys
    from torch.utils.file_baton import FileBaton
    FileBaton(sys.argv[1]).wait()
    print("DONE", flush=True)
    """
)


def _start_builder(lock) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", BUILDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "BUILDING"
    return proc


def _age(lock, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(lock, (then, then))


@pytest.fixture
def lock(tmp_path):
    op = tmp_path / "py311_cpu" / "deepspeed_shm_comm"
    op.mkdir(parents=True)
    return op / "lock"


def test_a_builder_killed_midway_leaves_a_lock_that_hangs_torch_and_is_recovered(lock, tmp_path):
    builder = _start_builder(lock)
    assert is_stale(lock, min_age_s=0) is False  # a live builder holds it open: never touched
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert lock.exists()  # the reproduction: the dead builder's lock stays behind
    with pytest.raises(subprocess.TimeoutExpired):  # ...and torch waits on it forever
        subprocess.run([sys.executable, "-c", WAITER, str(lock)], timeout=20, capture_output=True)
    _age(lock, 60)
    messages: list[str] = []
    assert find_locks(tmp_path) == [lock]
    assert recover_stale_locks(tmp_path, report=messages.append) == [lock]
    assert not lock.exists()
    assert "stale op-build lock" in messages[0] and "deepspeed_shm_comm" in messages[0]
    assert "DS_BUILD_" in messages[0]  # says how to avoid run-time builds
    done = subprocess.run([sys.executable, "-c", WAITER, str(lock)], timeout=120, capture_output=True, text=True)
    assert done.stdout.strip() == "DONE"


def test_a_live_build_is_left_alone_however_old(lock, tmp_path):
    builder = _start_builder(lock)
    try:
        _age(lock, 3600)
        assert recover_stale_locks(tmp_path, report=lambda m: None) == []
        assert lock.exists()
    finally:
        builder.kill()
        builder.wait()


def test_a_fresh_lock_is_not_judged(lock, tmp_path):
    lock.write_text("")
    assert recover_stale_locks(tmp_path, report=lambda m: None) == []  # younger than MIN_AGE_S
    _age(lock, 60)
    assert recover_stale_locks(tmp_path, report=lambda m: None) == [lock]


def test_recovery_can_be_switched_off(lock, tmp_path, monkeypatch):
    lock.write_text("")
    _age(lock, 60)
    monkeypatch.setenv("FABRIC_DEEPSPEED_LOCK_RECOVERY", "0")
    assert recover_stale_locks(tmp_path) == []
    assert lock.exists()


def test_a_process_waiting_on_a_builder_that_dies_is_released(lock, tmp_path, monkeypatch):
    """torch waits on another process's build; that builder is killed; the watcher frees the waiter."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    builder = _start_builder(lock)
    from torch.utils.file_baton import FileBaton

    finished = threading.Event()

    def wait_like_torch() -> None:
        FileBaton(str(lock)).wait()
        finished.set()

    with pytest.warns(UserWarning, match="stale op-build lock"):
        with watch_extension_locks(interval_s=0.2):
            waiter = threading.Thread(target=wait_like_torch, daemon=True)
            waiter.start()
            time.sleep(1.0)
            assert not finished.is_set()  # the build is running: waiting is right
            builder.send_signal(signal.SIGKILL)
            builder.wait()
            _age(lock, 60)
            assert finished.wait(timeout=60), "the waiter still hangs on the dead builder's lock"
