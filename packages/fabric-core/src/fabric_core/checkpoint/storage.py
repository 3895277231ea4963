"""Where checkpoint bytes live: local paths and fsspec URLs, resolved and checked before anything is written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fabric_core.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: Filesystems whose uploads become visible only when the file is closed (and never partly):
#: writing straight to the final name is atomic there, so no temporary copy is needed.
COMMIT_ON_CLOSE = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory"})

_MANGLED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/[^/]")


def protocol_of(path: str | Path) -> str | None:
    """The URL scheme of ``path`` (``None`` for a local path; ``file://`` counts as local)."""
    text = str(path)
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0]
    return None if scheme in ("file", "local") else scheme


def is_remote(path: str | Path) -> bool:
    """Whether ``path`` is a URL with a protocol other than ``file``."""
    return protocol_of(path) is not None


def local_path(path: str | Path) -> Path:
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


def check_location(path: str | Path) -> None:
    """Refuse a path no installed fsspec filesystem can handle, naming the scheme and the package to install.

    A URL that went through ``pathlib.Path`` (``memory:/bucket/ck``) is refused too: it would otherwise
    become a local folder named after the scheme.
    """
    if isinstance(path, Path) and _MANGLED_URL.match(str(path)):
        raise CheckpointError(
            f"{str(path)!r} looks like a URL that lost a '/' by going through pathlib.Path; pass URLs as strings "
            f"(e.g. {re.sub(r':/', '://', str(path), count=1)!r})."
        )
    scheme = protocol_of(path)
    if scheme is None:
        return
    import fsspec
    from fsspec.registry import known_implementations

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = known_implementations.get(scheme, {}).get("class", scheme).split(".", 1)[0]
        raise CheckpointError(
            f"Cannot use {str(path)!r}: the {scheme!r} scheme needs the fsspec filesystem from the {package!r} package, "
            f"which is not installed. Install it with: pip install {package}"
        ) from None
    except ValueError:
        known = sorted(set(known_implementations) | set(fsspec.available_protocols()))
        raise CheckpointError(
            f"Cannot use {str(path)!r}: no fsspec filesystem handles the {scheme!r} scheme. Known schemes: "
            f"{', '.join(known)} (a local path needs no scheme)."
        ) from None


def filesystem(path: str | Path, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem for ``path`` and the path inside it (after :func:`check_location`)."""
    check_location(path)
    import fsspec

    return fsspec.core.url_to_fs(str(path), **(storage_options or {}))


def join(base: str, *parts: str) -> str:
    """Join URL or path parts with ``/`` (fsspec paths always use ``/``)."""
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


@contextmanager
def remote_writer(fs: AbstractFileSystem, target: str) -> Iterator[IO[bytes]]:
    """A file that appears at ``target`` only if the block completes.

    On commit-on-close object stores the upload is aborted (``discard``) on an error; elsewhere the
    bytes go to a temporary name that is moved over ``target`` at the end.
    """
    import uuid

    from fabric_core.checkpoint.atomic import TMP_MARKER

    parent = target.rsplit("/", 1)[0] if "/" in target else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    direct = bool(protocols & COMMIT_ON_CLOSE)
    name = target.rsplit("/", 1)[-1]
    tmp = (
        target
        if direct
        else join(parent, f"{TMP_MARKER}{name}.{uuid.uuid4().hex}")
        if parent
        else f"{TMP_MARKER}{name}"
    )
    handle = fs.open(tmp, "wb")
    try:
        yield handle
    except BaseException:
        discard = getattr(handle, "discard", None)
        if callable(discard):
            discard()
        else:  # pragma: no cover - filesystems without discard
            handle.close()
        if not direct and fs.exists(tmp):
            fs.rm(tmp)
        raise
    handle.close()
    if not direct:
        try:
            fs.mv(tmp, target)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
