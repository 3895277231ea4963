"""Hardware and installation probes: env variables, sysfs and package metadata only."""

from __future__ import annotations

from pathlib import Path

from fabric_xla import probe


def _fake_pci_device(root: Path, name: str, vendor: str, device: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(vendor + "\n")
    (folder / "device").write_text(device + "\n")


def test_tpu_chips_reads_google_tpu_devices_from_sysfs(tmp_path):
    _fake_pci_device(tmp_path, "0000:00:04.0", "0x1ae0", "0x005e")  # TPU v4: one device per chip
    _fake_pci_device(tmp_path, "0000:00:05.0", "0x1ae0", "0x0027")  # TPU v2/v3: two cores per chip
    _fake_pci_device(tmp_path, "0000:00:06.0", "0x1ae0", "0x1234")  # another Google device
    _fake_pci_device(tmp_path, "0000:00:07.0", "0x10de", "0x005e")  # another vendor
    assert sorted(probe.tpu_chips(str(tmp_path))) == [1, 2]


def test_no_tpu_chips_on_this_kind_of_machine(tmp_path):
    assert probe.tpu_chips(str(tmp_path)) == []


def test_pjrt_device_normalises_the_variable():
    assert probe.pjrt_device({}) is None
    assert probe.pjrt_device({"PJRT_DEVICE": "cpu"}) == "CPU"
    assert probe.pjrt_device({"PJRT_DEVICE": "TPU_LEGACY"}) == "TPU"


def test_tpu_present_only_for_a_real_tpu():
    assert probe.tpu_present({"PJRT_DEVICE": "TPU"})
    assert not probe.tpu_present({"PJRT_DEVICE": "CPU"})


def test_local_device_count_follows_the_num_devices_variables():
    assert probe.local_device_count({"PJRT_DEVICE": "CPU"}) == 1
    assert probe.local_device_count({"PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "4"}) == 4
    assert probe.local_device_count({"PJRT_DEVICE": "TPU", "TPU_NUM_DEVICES": "8"}) == 8
    assert probe.local_device_count({"PJRT_DEVICE": "CUDA", "GPU_NUM_DEVICES": "2"}) == 2


def test_missing_torch_xla_message_names_torch_and_the_install_command():
    message = probe.describe_installation("2.13.0+cpu", None)
    assert "torch_xla" in message and "2.13.0+cpu" in message
    assert "pip install torch==2.9.0 torch_xla==2.9.0" in message


def test_mismatched_pair_message_names_both_versions():
    message = probe.describe_installation("2.13.0", "2.9.0")
    assert "torch_xla 2.9.0 needs torch 2.9.*" in message and "torch 2.13.0 is installed" in message
    assert "pip install torch==2.9.0 torch_xla==2.9.0" in message


def test_matching_pair_is_fine_whatever_the_local_build_tag():
    assert probe.describe_installation("2.9.0+cu128", "2.9.0") is None
    assert probe.describe_installation("2.9.1", "2.9.0") is None
