"""A real S3-compatible server on loopback for checkpoint tests: moto in server mode, reached through s3fs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(timeout: float = 120.0) -> Iterator[dict[str, Any]]:
    """Start ``moto_server`` on a free loopback port; yields the s3fs storage options; always stops it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, **DUMMY_CREDENTIALS}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {server.returncode} before it was ready")
            try:
                urllib.request.urlopen(endpoint + "/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout} s") from None
                time.sleep(0.2)
        yield {
            "endpoint_url": endpoint,
            "key": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "use_listings_cache": False,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def make_bucket(storage_options: dict[str, Any], name: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options, skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
