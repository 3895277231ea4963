"""Readers and process helpers for the fabric-loggers tests (files are read back with the real readers)."""

from __future__ import annotations

import csv
import os
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


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds (a hang guard, not a benchmark)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- trackers
def read_wandb_run_file(path: str) -> list[Any]:
    """Every record of a W&B run file (``run-<id>.wandb``), decoded with W&B's own protobuf ``Record``.

    The file is W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then LevelDB
    log framing (32 KiB blocks; each chunk: crc32, 2-byte length, 1-byte type FULL/FIRST/MIDDLE/LAST).
    """
    from wandb.proto import wandb_internal_pb2

    block = 32768
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left_in_block = block - position % block
        if left_in_block < 7:  # too small for a chunk header: zero padding
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        if kind == 0 and length == 0:
            break  # preallocated zeros at the end of a file that was not closed
        payload = data[position + 7 : position + 7 + length]
        if len(payload) < length:
            break  # the last chunk of a killed writer
        position += 7 + length
        pending += payload
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        elif kind == 2:  # FIRST
            pending = payload
    return records


def wandb_offline_run(save_dir: str, run_id: str, finished: bool = True, exits: int = 1) -> dict[str, Any]:
    """What an offline W&B run recorded: ``history`` [(step, {key: value})], ``config``, ``exit_code``, ``runs``.

    W&B's service process writes the file after ``finish()`` returns: with ``finished`` wait (at most two
    minutes) until the run's files hold ``exits`` exit records (one per ``finish()``, a resumed run has two).
    """
    if finished:
        wait_for(lambda: _wandb_exit_records(save_dir, run_id) >= exits, 120, f"W&B's exit record of run {run_id}")
    return _read_wandb_offline_run(save_dir, run_id)


def _wandb_run_files(save_dir: str, run_id: str) -> list[str]:
    """The run's files, oldest first; a run resumed within the same second as the first start gets
    the folder name with a ``-N`` suffix (which would sort before the unsuffixed one by name)."""
    import glob
    import re

    pattern = re.compile(rf"-run-(\d+_\d+)-{re.escape(run_id)}(?:-(\d+))?$")
    found = []
    for path in glob.glob(os.path.join(save_dir, "wandb", f"*-run-*-{run_id}*", f"run-{run_id}.wandb")):
        match = pattern.search(os.path.basename(os.path.dirname(path)))
        if match:
            found.append(((match[1], int(match[2] or 0)), path))
    return [path for _, path in sorted(found)]


def _wandb_exit_records(save_dir: str, run_id: str) -> int:
    return sum(
        record.WhichOneof("record_type") == "exit"
        for path in _wandb_run_files(save_dir, run_id)
        for record in read_wandb_run_file(path)
    )


def _read_wandb_offline_run(save_dir: str, run_id: str) -> dict[str, Any]:
    import json

    found: dict[str, Any] = {"history": [], "config": {}, "exit_code": None, "runs": 0}
    for path in _wandb_run_files(save_dir, run_id):
        for record in read_wandb_run_file(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["runs"] += 1
                for item in record.run.config.update:
                    found["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "history":
                values = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item
                }
                found["history"].append((record.history.step.num, values))
            elif kind == "config":
                for item in record.config.update:
                    found["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            elif kind == "exit":
                found["exit_code"] = record.exit.exit_code
    return found


def user_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """A W&B history row without the keys W&B adds itself (``_step``, ``_runtime``, ``_timestamp``)."""
    return {key: value for key, value in values.items() if not key.startswith("_")}


def comet_offline_archives(save_dir: str) -> list[dict[str, Any]]:
    """Each offline Comet archive under ``save_dir``, unpacked with Comet's own ``unzip_offline_archive``:
    ``experiment`` (experiment.json), ``metrics`` [(step, name, value)], ``params`` and ``others``."""
    import glob
    import json
    import shutil

    from comet_ml.offline import unzip_offline_archive

    archives = []
    for path in sorted(glob.glob(os.path.join(save_dir, "*.zip")), key=os.path.getmtime):
        folder = unzip_offline_archive(path)
        try:
            with open(os.path.join(folder, "experiment.json"), encoding="utf-8") as handle:
                found: dict[str, Any] = {"experiment": json.load(handle), "metrics": [], "params": {}, "others": {}}
            with open(os.path.join(folder, "messages.json"), encoding="utf-8") as handle:
                for line in handle:
                    message = json.loads(line)
                    payload = message["payload"]
                    if message["type"] == "metric_msg":
                        metric = payload["metric"]
                        found["metrics"].append((metric["step"], metric["metricName"], metric["metricValue"]))
                    elif message["type"] == "parameter_msg" and payload["param"]["source"] == "manual":
                        found["params"][payload["param"]["paramName"]] = payload["param"]["paramValue"]
                    elif message["type"] == "log_other":
                        found["others"][payload["key"]] = payload["value"]
                    elif message["type"] not in found:
                        found[message["type"]] = [payload]
                    else:
                        found[message["type"]].append(payload)
        finally:
            shutil.rmtree(folder)
        archives.append(found)
    return archives
