"""Recovering from op-build locks left behind by processes that died while compiling a DeepSpeed op.

DeepSpeed compiles its ops with ``torch.utils.cpp_extension``, which serialises builds with a
lock file ``<TORCH_EXTENSIONS_DIR>/<build folder>/<op>/lock`` (torch's ``FileBaton``): the builder
creates it, keeps it open for the whole build and deletes it at the end. A builder killed midway
leaves the file, and every later build of that op waits for it forever.

The file holds no pid, so the rule uses the open file itself: a builder keeps the lock open until
it finishes, so a lock that no process on this machine has open (checked through ``/proc``) and
that is older than a few seconds belongs to a dead builder. It is removed with a message, and the
op is built again. Where ``/proc`` is missing the lock is left alone and a message names it.
A ``TORCH_EXTENSIONS_DIR`` shared between machines cannot be checked this way (a builder on
another machine is invisible here): set ``FABRIC_DEEPSPEED_LOCK_RECOVERY=0`` there, or prebuild
the ops (see the package README).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: set to ``0`` to leave op-build locks alone (a TORCH_EXTENSIONS_DIR shared between machines)
ENV_SWITCH = "FABRIC_DEEPSPEED_LOCK_RECOVERY"
#: a lock younger than this is never judged (its builder may be opening it right now)
MIN_AGE_S = 5.0
PREBUILD_HINT = (
    "Prebuild the ops to skip run-time compilation: DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 "
    "pip install deepspeed --no-build-isolation (see fabric-deepspeed's README)."
)


def extensions_root() -> Path:
    """Where torch builds extensions: ``TORCH_EXTENSIONS_DIR`` or torch's default cache folder."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def find_locks(root: Path) -> list[Path]:
    """Op-build lock files under ``root`` (``<root>/<op>/lock`` and ``<root>/<build folder>/<op>/lock``)."""
    if not root.is_dir():
        return []
    return sorted({*root.glob("*/lock"), *root.glob("*/*/lock")})


def holders(lock: Path) -> list[int] | None:
    """Pids of processes on this machine that have ``lock`` open; ``None`` when that cannot be known."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    target = os.path.realpath(lock)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # the process ended, or belongs to another user
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return found


def is_stale(lock: Path, min_age_s: float = MIN_AGE_S) -> bool | None:
    """Whether ``lock`` was left by a dead builder (``None``: unknown on this system)."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < min_age_s:
        return False
    pids = holders(lock)
    if pids is None:
        return None
    return not pids


def recover_stale_locks(
    root: Path | None = None, min_age_s: float = MIN_AGE_S, report: Callable[[str], None] | None = None
) -> list[Path]:
    """Remove the op-build locks of dead builders under ``root``; returns the removed paths."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return []
    say = report or _warn
    removed = []
    for lock in find_locks(root or extensions_root()):
        stale = is_stale(lock, min_age_s)
        if stale is None:
            say(
                f"fabric-deepspeed: the op-build lock {lock} exists and this system cannot tell whether its builder is "
                f"alive. If no build is running, delete it, or every build of the {lock.parent.name!r} op waits "
                f"forever. {PREBUILD_HINT}"
            )
        elif stale:
            try:
                lock.unlink()
            except FileNotFoundError:
                continue
            removed.append(lock)
            say(
                f"fabric-deepspeed: removed the stale op-build lock {lock}: no running process holds it, so the "
                f"process that was compiling the {lock.parent.name!r} op died during the build. The op is compiled "
                f"again now (about a minute). {PREBUILD_HINT}"
            )
    return removed


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)
    print(message, file=sys.stderr, flush=True)


@contextmanager
def watch_extension_locks(interval_s: float = 2.0, root: Path | None = None) -> Iterator[None]:
    """While DeepSpeed may build ops, recover locks whose builder dies (a build we would otherwise wait on)."""
    recover_stale_locks(root)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval_s):
            recover_stale_locks(root)

    watcher = threading.Thread(target=watch, name="fabric-deepspeed-lock-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=interval_s + 5)
