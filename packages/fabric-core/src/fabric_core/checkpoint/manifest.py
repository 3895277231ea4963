"""The manifest of a folder checkpoint: every file's size, checksum and writer rank, written last.

A folder checkpoint is complete only once its manifest exists, so loaders that require it never see
half a checkpoint. The manifest carries a checksum of itself, so damage to it is detected too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.integrity import ALGORITHM, hash_file, new_hasher

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

MANIFEST = "fabric-manifest.json"
FORMAT = "fabric-checkpoint-manifest"
VERSION = 1


@dataclass(frozen=True)
class FileRecord:
    size: int
    digest: str
    rank: int


@dataclass
class Manifest:
    """``root``: the subfolder holding the files ('' when they sit beside the manifest)."""

    kind: str
    root: str = ""
    files: dict[str, FileRecord] = field(default_factory=dict)

    def encode(self) -> bytes:
        body = json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "algorithm": ALGORITHM,
                "kind": self.kind,
                "root": self.root,
                "files": {k: [r.size, r.digest, r.rank] for k, r in sorted(self.files.items())},
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        hasher = new_hasher()
        hasher.update(body)
        return body + b"\n" + f"{ALGORITHM}:{hasher.hexdigest()}\n".encode()

    @classmethod
    def decode(cls, data: bytes, name: str) -> Manifest:
        damaged = f"The manifest {name!r} is damaged"
        body, _, check = data.rstrip(b"\n").rpartition(b"\n")
        hasher = new_hasher()
        hasher.update(body)
        if check.decode("ascii", errors="replace") != f"{ALGORITHM}:{hasher.hexdigest()}":
            raise CheckpointError(f"{damaged}: its own checksum does not match (truncated or changed file).")
        try:
            doc = json.loads(body)
            if doc["format"] != FORMAT:
                raise ValueError(f"format {doc['format']!r}")
            if doc["version"] > VERSION:
                raise CheckpointError(
                    f"{name!r} was written in manifest version {doc['version']} by a newer fabric-core; this one reads "
                    f"up to {VERSION}. Upgrade: pip install -U fabric-core"
                )
            if doc["algorithm"] != ALGORITHM:
                raise ValueError(f"unknown checksum algorithm {doc['algorithm']!r}")
            files = {str(k): FileRecord(int(v[0]), str(v[1]), int(v[2])) for k, v in doc["files"].items()}
            return cls(kind=str(doc["kind"]), root=str(doc["root"]), files=files)
        except CheckpointError:
            raise
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise CheckpointError(f"{damaged}: {type(err).__name__}: {err}") from None


def describe(name: str, record: FileRecord) -> str:
    return f"file {name!r} (the shard written by rank {record.rank})"


def verify_files(
    fs: AbstractFileSystem | None, folder: str, manifest: Manifest, rank: int = 0, world_size: int = 1
) -> list[str]:
    """Check this rank's share of the files (every ``world_size``-th); returns one message per bad file."""
    problems = []
    for index, (name, record) in enumerate(sorted(manifest.files.items())):
        if index % world_size != rank:
            continue
        path = f"{folder.rstrip('/')}/{name}"
        try:
            size, digest = hash_file(fs, path)
        except FileNotFoundError:
            problems.append(f"{describe(name, record)} is missing")
            continue
        if size != record.size:
            problems.append(f"{describe(name, record)} has {size} bytes, the manifest records {record.size}")
        elif digest != record.digest:
            problems.append(
                f"{describe(name, record)} does not match its checksum ({ALGORITHM} expected {record.digest}, "
                f"got {digest})"
            )
    return problems


def raise_problems(location: str, problems: list[str]) -> None:
    if problems:
        raise CheckpointError(
            f"Checkpoint {location!r} is damaged: " + "; ".join(problems) + ". Load another checkpoint (or pass "
            "verify=False to load it anyway)."
        )


def gather(obj: Any, group: Any = None) -> list[Any]:
    """``obj`` of every rank of ``group`` (default: all; just ``[obj]`` without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
