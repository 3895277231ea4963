"""Flush a file to disk while it is still being written, so that the final fsync has little left to do.

An atomic save must fsync its file before the rename. Without help the kernel keeps the whole
checkpoint in the page cache (1 GB is well below the dirty-page limits) and the fsync then writes
all of it while the caller waits. Here a helper thread starts ``fdatasync`` each time another
``step`` bytes have reached the file, so the disk writes overlap the serialisation and the final
fsync only writes the tail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STEP = 64 << 20
PERIOD = 0.02


@contextmanager
def write_behind(fd: int, step: int = STEP, period: float = PERIOD) -> Iterator[None]:
    """While the block runs, flush ``fd`` to disk in the background every ``step`` bytes of growth.

    Best effort: a file system that refuses ``fdatasync`` just leaves the work to the final fsync.
    """
    sync = getattr(os, "fdatasync", os.fsync)
    stop = threading.Event()

    def run() -> None:
        flushed = 0
        while not stop.wait(period):
            try:
                size = os.fstat(fd).st_size
                if size - flushed >= step:
                    sync(fd)
                    flushed = size
            except OSError:
                return

    thread = threading.Thread(target=run, name="fabric-checkpoint-write-behind", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
