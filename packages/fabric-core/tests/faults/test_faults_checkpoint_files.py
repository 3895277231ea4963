"""Damaged, foreign and newer-format checkpoint files: a CheckpointError naming the file, never code execution.

Extends test_checkpoint.py (one empty file, one text file, one half-cut file, one payload, one
newer format) to every truncation point, random bytes, zips with the wrong content, foreign formats,
payloads hidden in each container, and byte mutations drawn by hypothesis.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fabric_core import Fabric
from fabric_core.checkpoint.errors import CheckpointError
from fabric_core.checkpoint.torch_io import FORMAT_KEY, FORMAT_VERSION, TorchCheckpointIO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ORIGINAL: dict[str, Any] = {
    "step": 3,
    "model": {"weight": torch.arange(12.0).reshape(3, 4), "bias": torch.tensor([0.5, -0.5, 1.5])},
    "optimizer": {"state": {0: {"momentum": torch.full((4,), 0.25)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
    "name": "run-1",
}


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "ckpt.pt"
    TorchCheckpointIO().save_checkpoint(ORIGINAL, path)
    return path.read_bytes()


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _load(path: Path, with_fabric: bool = False) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about odd pickle protocols in random bytes
        if with_fabric:
            return Fabric(accelerator="cpu").load(path)
        return TorchCheckpointIO().load_checkpoint(path)


def _assert_refused(path: Path, with_fabric: bool = False) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        _load(path, with_fabric)
    assert str(path) in str(info.value), "the error names the file"
    return info.value


# torch.jit (a foreign file format here, torch.compile there) warns that it is deprecated
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ----------------------------------------------------------------------------- truncation


def test_every_truncation_point_of_a_checkpoint_is_refused(tmp_path, valid_bytes):
    path = tmp_path / "cut.pt"
    for cut in range(len(valid_bytes)):  # every byte: 0 (empty) .. one byte short
        path.write_bytes(valid_bytes[:cut])
        _assert_refused(path)


def test_truncated_large_checkpoint_is_refused_through_fabric_load(tmp_path):
    path = tmp_path / "large.pt"
    fabric = Fabric(accelerator="cpu")
    fabric.save(path, {"step": 1, "weights": torch.randn(256, 1024)})  # ~1 MB
    data = path.read_bytes()
    rng = random.Random(0)
    cuts = sorted(
        {0, 1, 2, 3, 4, 30, 64, len(data) - 1, len(data) - 22, *(rng.randrange(len(data)) for _ in range(40))}
    )
    for cut in cuts:
        path.write_bytes(data[:cut])
        _assert_refused(path, with_fabric=True)


# ----------------------------------------------------------------------------- garbage


@pytest.mark.parametrize("seed", range(0, 400, 20))
def test_random_zip_like_bytes_are_refused(tmp_path, seed):
    """Random bytes behind a zip signature: the zip reader must reject them."""
    rng = random.Random(seed)
    path = tmp_path / "random.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 4000))))
    _assert_refused(path)


NOT_CHECKPOINTS = {
    "empty": b"",
    "nul bytes": b"\x00" * 100,
    "text": b"hello world\n",
    "pickle opcode POP on an empty stack": b"0.",
    "pickle memo lookup of a missing key": b"h\x05.",
}


@pytest.mark.parametrize("name", list(NOT_CHECKPOINTS))
def test_bytes_that_are_no_checkpoint_are_refused(tmp_path, name):
    path = tmp_path / "garbage.pt"
    path.write_bytes(NOT_CHECKPOINTS[name])
    _assert_refused(path)


def test_random_bytes_are_refused(tmp_path):
    """Random bytes (mostly read as a legacy pickle stream by torch): IndexError/KeyError inside must not leak."""
    path = tmp_path / "random.pt"
    for seed in range(200):
        rng = random.Random(seed)
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))))
        _assert_refused(path)


# ----------------------------------------------------------------------------- foreign files and payloads


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): the marker file exists iff code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _PlainObject:
    def __init__(self) -> None:
        self.value = 1


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _torch_zip_with(valid: bytes, replace: dict[str, bytes | None]) -> bytes:
    """A fabric checkpoint's zip with some records replaced (``None`` drops the record)."""
    source = zipfile.ZipFile(io.BytesIO(valid))
    entries = {}
    for info in source.infolist():
        key = next((k for k in replace if info.filename.endswith(k)), None)
        if key is None:
            entries[info.filename] = source.read(info.filename)
        elif replace[key] is not None:
            entries[info.filename] = replace[key]
    return _zip(entries)


def _foreign_files(valid: bytes, marker: Path) -> dict[str, bytes]:
    payload = _CreatesMarker(marker)
    files: dict[str, bytes] = {}
    files["pickle of an object whose unpickling runs code"] = pickle.dumps({"step": 1, "x": payload})
    files["pickle of a class"] = pickle.dumps(_PlainObject)
    files["pickle of a class instance"] = pickle.dumps({"step": 1, "obj": _PlainObject()})
    files["json"] = json.dumps({"step": 1, "weights": [1.0, 2.0]}).encode()
    npy = io.BytesIO()
    np.save(npy, np.arange(10.0))
    files["numpy .npy"] = npy.getvalue()
    npy_objects = io.BytesIO()
    np.save(npy_objects, np.array([payload, 1], dtype=object), allow_pickle=True)
    files["numpy .npy of objects (a pickle inside)"] = npy_objects.getvalue()
    npz = io.BytesIO()
    np.savez(npz, a=np.arange(3))
    files["numpy .npz (a zip)"] = npz.getvalue()
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    files["torchscript module (a zip)"] = scripted.getvalue()
    saved = io.BytesIO()
    torch.save({"step": 1, "x": payload}, saved)
    files["torch.save of an object whose unpickling runs code"] = saved.getvalue()
    legacy = io.BytesIO()
    torch.save({"step": 1, "x": payload}, legacy, _use_new_zipfile_serialization=False)
    files["legacy torch.save format with code"] = legacy.getvalue()
    files["zip holding other files"] = _zip({"hello.txt": b"hi", "data.bin": b"\x00" * 64})
    files["zip with a garbage data.pkl"] = _zip({"archive/data.pkl": b"garbage", "archive/version": b"3\n"})
    files["zip whose data.pkl runs code"] = _zip(
        {"archive/data.pkl": pickle.dumps({"x": payload}, protocol=2), "archive/version": b"3\n"}
    )
    files["fabric checkpoint with data.pkl swapped for code"] = _torch_zip_with(
        valid, {"data.pkl": pickle.dumps({"x": payload}, protocol=2)}
    )
    files["fabric checkpoint missing a tensor record"] = _torch_zip_with(valid, {"data/0": None})
    files["fabric checkpoint with a short tensor record"] = _torch_zip_with(valid, {"data/0": b"\x00" * 4})
    files["fabric checkpoint missing data.pkl"] = _torch_zip_with(valid, {"data.pkl": None})
    return files


FOREIGN_NAMES = [
    "pickle of an object whose unpickling runs code",
    "pickle of a class",
    "pickle of a class instance",
    "json",
    "numpy .npy",
    "numpy .npy of objects (a pickle inside)",
    "numpy .npz (a zip)",
    "torchscript module (a zip)",
    "torch.save of an object whose unpickling runs code",
    "legacy torch.save format with code",
    "zip holding other files",
    "zip with a garbage data.pkl",
    "zip whose data.pkl runs code",
    "fabric checkpoint with data.pkl swapped for code",
    "fabric checkpoint missing a tensor record",
    "fabric checkpoint with a short tensor record",
    "fabric checkpoint missing data.pkl",
]


@pytest.mark.parametrize("with_fabric", [False, True], ids=["checkpoint_io", "fabric_load"])
def test_foreign_files_are_refused_without_running_their_code(tmp_path, valid_bytes, monkeypatch, with_fabric):
    marker = tmp_path / "code-ran"
    monkeypatch.chdir(tmp_path)
    files = _foreign_files(valid_bytes, marker)
    assert sorted(files) == sorted(FOREIGN_NAMES)
    for index, name in enumerate(FOREIGN_NAMES):
        path = tmp_path / f"foreign{index}.pt"
        path.write_bytes(files[name])
        error = _assert_refused(path, with_fabric)
        assert not marker.exists(), f"loading {name!r} ran code from the file"
        assert error.__class__ is CheckpointError, name


@pytest.mark.parametrize("name", ["json", "numpy .npy"])
def test_non_pickle_files_are_not_blamed_on_safe_loading(tmp_path, valid_bytes, name):
    path = tmp_path / "foreign.pt"
    path.write_bytes(_foreign_files(valid_bytes, tmp_path / "m")[name])
    error = _assert_refused(path)
    assert "weights_only=False" not in str(error)


def test_plain_torch_files_in_the_legacy_format_still_load(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"step": 4, "w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    loaded = _load(path)
    assert loaded["step"] == 4 and torch.equal(loaded["w"], torch.ones(2))


# ----------------------------------------------------------------------------- newer formats


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, 99, 2**62])
def test_newer_format_is_refused_with_an_upgrade_hint(tmp_path, version):
    path = tmp_path / "future.pt"
    torch.save({FORMAT_KEY: version, "step": 1, "w": torch.ones(3)}, path)
    for with_fabric in (False, True):
        error = _assert_refused(path, with_fabric)
        assert f"format {version}" in str(error) and "pip install -U fabric-core" in str(error)


@pytest.mark.parametrize("version", [float(FORMAT_VERSION + 1), FORMAT_VERSION + 0.5, str(FORMAT_VERSION + 1)])
def test_newer_format_marker_of_another_type_is_refused(tmp_path, version):
    path = tmp_path / "future.pt"
    torch.save({FORMAT_KEY: version, "step": 1}, path)
    _assert_refused(path)


# ----------------------------------------------------------------------------- byte mutations


def _record_offset(data: bytes, suffix: str) -> tuple[int, int]:
    """Where the bytes of the zip record whose name ends with ``suffix`` start, and how many there are."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    name_length = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    return info.header_offset + 30 + name_length + extra_length, info.file_size


# torch's zip reader does not verify the CRC32 of records; the checksum fabric writes into every file does.
def test_flipped_byte_in_tensor_data_is_detected(tmp_path, valid_bytes):
    start, size = _record_offset(valid_bytes, "data/0")
    damaged = bytearray(valid_bytes)
    damaged[start + size // 2] ^= 0x40
    path = tmp_path / "bitflip.pt"
    path.write_bytes(bytes(damaged))
    _assert_refused(path)


@settings(
    max_examples=400,
    derandomize=True,  # the same examples every run, so that the outcome is stable
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_checkpoint_loads_unchanged_or_raises_checkpoint_error(tmp_path, valid_bytes, data):
    size = len(valid_bytes)
    changes = data.draw(
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=6), label="changes"
    )
    cut = data.draw(st.none() | st.integers(0, size), label="truncate at")
    insert = data.draw(st.none() | st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=16)), label="insert")
    damaged = bytearray(valid_bytes)
    for position, value in changes:
        damaged[position] = value
    if insert is not None:
        damaged[insert[0] : insert[0]] = insert[1]
    if cut is not None:
        damaged = damaged[:cut]
    path = tmp_path / "mutated.pt"
    path.write_bytes(bytes(damaged))
    try:
        loaded = _load(path)
    except CheckpointError as error:
        assert str(path) in str(error)
        return
    assert _equal(loaded, ORIGINAL), f"the damaged file loaded as different content: {loaded}"


def test_checkpoint_io_round_trip_of_the_fuzz_original(tmp_path, valid_bytes):
    """The mutation test's reference: the untouched bytes load to exactly the original content."""
    path = tmp_path / "valid.pt"
    path.write_bytes(valid_bytes)
    assert _equal(_load(path), ORIGINAL)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".fabric-tmp-")]
