"""torch.distributed.checkpoint writers and readers for local folders and fsspec URLs, hashing as they write."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fabric_core.checkpoint.folder import FolderLoad, FolderSave
from fabric_core.checkpoint.integrity import HashingWriter


class _HashingFileSystem:
    """Wraps a DCP writer's file system object so that every file it writes is hashed on the way out.

    ``records`` maps each file name to (size, checksum); DCP's ``.metadata.tmp`` is recorded under
    the name it is renamed to.
    """

    def __init__(self, inner: Any, records: dict[str, tuple[int, str]]) -> None:
        self._inner = inner
        self.records = records

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextmanager
    def create_stream(self, path: Any, mode: str) -> Iterator[Any]:
        if "w" not in mode:
            with self._inner.create_stream(path, mode) as stream:
                yield stream
            return
        with self._inner.create_stream(path, mode) as raw:
            writer = HashingWriter(raw)
            yield writer
            digest = writer.finish()
        name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
        self.records[name.removesuffix(".tmp")] = (writer.written, digest)


def hashing_writer(save: FolderSave) -> tuple[Any, dict[str, tuple[int, str]]]:
    """A DCP storage writer into ``save``'s folder and the (name -> size, checksum) records it fills."""
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

    records: dict[str, tuple[int, str]] = {}
    if save.remote:
        writer = FsspecWriter(save.url, sync_files=False, **(save.storage_options or {}))
    else:
        writer = FileSystemWriter(save.folder)  # type: ignore[assignment]
    writer.fs = _HashingFileSystem(writer.fs, records)  # type: ignore[assignment]
    return writer, records


def reader(load: FolderLoad, storage_options: dict[str, Any] | None = None) -> Any:
    """A DCP storage reader for the folder ``load`` found."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    if load.fs is not None:
        return FsspecReader(load.url, **(storage_options or {}))
    return FileSystemReader(load.folder)
