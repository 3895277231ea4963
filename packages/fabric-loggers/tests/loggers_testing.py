"""Readers and process helpers for the fabric-loggers tests (files are read back with the real readers)."""

from __future__ import annotations

import csv
import os
import socket
import time
from collections.abc import Callable
from typing import Any


def read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a metrics.csv, with the standard library's reader."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def event_accumulator(log_dir: str) -> Any:
    """TensorBoard's own reader over every event file in ``log_dir``, fully loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(log_dir: str, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every scalar event for ``tag`` on disk now (empty when none is there yet)."""
    accumulator = event_accumulator(log_dir)
    if tag not in accumulator.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def hparams_plugin_data(log_dir: str) -> dict[str, Any]:
    """The experiment, session start and session end records of TensorBoard's hparams plugin."""
    from tensorboard.plugins.hparams import metadata

    content = event_accumulator(log_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    parsed: dict[str, Any] = {}
    if metadata.EXPERIMENT_TAG in content:
        parsed["experiment"] = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    if metadata.SESSION_START_INFO_TAG in content:
        parsed["start"] = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    if metadata.SESSION_END_INFO_TAG in content:
        parsed["end"] = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    return parsed


def hparam_values(log_dir: str) -> dict[str, Any]:
    """Session-start hparams as Python values (bool, float or str, as TensorBoard stored them)."""
    values = {}
    for name, value in hparams_plugin_data(log_dir)["start"].hparams.items():
        values[name] = getattr(value, value.WhichOneof("kind"))
    return values


def all_files(root: str) -> list[str]:
    """Every file under ``root``, relative to it, sorted."""
    found = []
    for folder, _, files in os.walk(root):
        found.extend(os.path.relpath(os.path.join(folder, name), root) for name in files)
    return sorted(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds (a hang guard, not a benchmark)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.05)
