"""Folder checkpoints for backends (DeepSpeed folders, XLA shards): fsspec URLs, atomic commits, checksums.

The same machinery core's sharded FSDP checkpoints use: a folder is complete only once its
manifest (every file's size and XXH3-128 checksum) is written, last; on object stores each save
goes to a fresh subfolder that the manifest names. Part of the versioned backend contract.
"""

from fabric_core.checkpoint.atomic import atomic_write
from fabric_core.checkpoint.folder import (
    FolderLoad,
    FolderSave,
    commit,
    is_folder,
    new_save_id,
    open_folder,
    plan_folder_save,
    prepare,
    record,
)
from fabric_core.checkpoint.integrity import hash_file
from fabric_core.checkpoint.manifest import MANIFEST, FileRecord, Manifest, gather, raise_problems, verify_files
from fabric_core.checkpoint.storage import check_location, filesystem, is_remote

__all__ = [
    "MANIFEST",
    "FileRecord",
    "FolderLoad",
    "FolderSave",
    "Manifest",
    "atomic_write",
    "check_location",
    "commit",
    "filesystem",
    "gather",
    "hash_file",
    "is_folder",
    "is_remote",
    "new_save_id",
    "open_folder",
    "plan_folder_save",
    "prepare",
    "raise_problems",
    "record",
    "verify_files",
]
