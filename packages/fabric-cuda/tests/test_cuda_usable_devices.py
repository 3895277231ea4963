"""find_usable_cuda_devices: which GPUs can allocate, with the per-device probe faked or run for real."""

from __future__ import annotations

import pytest
import torch
from cuda_fakes import fake_gpus, forbid_cuda_init
from fabric_cuda import find_usable_cuda_devices, usable_devices


def fake_probe(monkeypatch: pytest.MonkeyPatch, errors: dict[int, str]) -> list[tuple[list[int], int]]:
    """Devices in ``errors`` fail with that message; the others work. Returns the calls made."""
    calls: list[tuple[list[int], int]] = []

    def probe(indices: list[int], want: int) -> tuple[list[int], dict[int, str]]:
        calls.append((list(indices), want))
        usable: list[int] = []
        seen: dict[int, str] = {}
        for index in indices:
            if len(usable) == want:
                break
            if index in errors:
                seen[index] = errors[index]
            else:
                usable.append(index)
        return usable, seen

    monkeypatch.setattr(usable_devices, "run_probe", probe)
    return calls


BUSY = "CUDA error: CUDA-capable device(s) is/are busy or unavailable"


def test_skips_busy_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 4)
    forbid_cuda_init(monkeypatch)  # the caller itself never touches CUDA
    calls = fake_probe(monkeypatch, {1: BUSY})
    assert find_usable_cuda_devices(2) == [0, 2]
    assert calls == [([0, 1, 2, 3], 2)]
    assert find_usable_cuda_devices(-1) == [0, 2, 3]
    assert find_usable_cuda_devices() == [0, 2, 3]


def test_too_few_usable_devices_names_each_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 3)
    fake_probe(monkeypatch, {0: BUSY, 2: "out of memory"})
    with pytest.raises(RuntimeError, match=r"wanted 2 usable GPU\(s\) of the 3 visible, but only 1") as info:
        find_usable_cuda_devices(2)
    message = str(info.value)
    assert f"cuda:0: {BUSY}" in message and "cuda:2: out of memory" in message and "exclusive-process" in message


def test_all_means_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2)
    fake_probe(monkeypatch, {0: BUSY, 1: BUSY})
    with pytest.raises(RuntimeError, match="wanted any usable GPU"):
        find_usable_cuda_devices(-1)


def test_more_than_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(monkeypatch, 2, visible="1")
    calls = fake_probe(monkeypatch, {})
    with pytest.raises(RuntimeError, match=r"find_usable_cuda_devices\(2\) asks for more GPUs than the 1 visible"):
        find_usable_cuda_devices(2)
    assert calls == []


def test_zero_devices_needs_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_probe(monkeypatch, {})
    assert find_usable_cuda_devices(0) == []
    assert calls == []


@pytest.mark.parametrize("bad", [-2, True, "2", 1.0, None])
def test_invalid_count(bad: object) -> None:
    with pytest.raises(ValueError, match="num_devices must be -1"):
        find_usable_cuda_devices(bad)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="checks a CPU-only build of torch")
def test_without_gpus_the_error_says_why() -> None:
    with pytest.raises(RuntimeError, match=r"found no CUDA device: the installed torch .* CPU-only build"):
        find_usable_cuda_devices(1)


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="checks a CPU-only build of torch")
def test_real_probe_process_reports_each_failure() -> None:
    usable, errors = usable_devices.run_probe([0, 1], want=2)
    assert usable == []
    assert set(errors) == {0, 1}
    assert all("not compiled with CUDA" in message for message in errors.values())


def test_probe_process_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usable_devices.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match=r"failed \(exit code 1\)"):
        usable_devices.run_probe([0], want=1)
