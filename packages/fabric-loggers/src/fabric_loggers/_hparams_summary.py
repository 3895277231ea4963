"""The summaries TensorBoard's HPARAMS tab reads: an experiment, a session start and a session end.

Built from TensorBoard's own protos and tags (``tensorboard.plugins.hparams``) rather than through
``SummaryWriter.add_hparams``, which writes into a new timestamped sub-folder instead of the run's
event file and cannot store booleans as booleans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_STATUSES = {"success": "STATUS_SUCCESS", "failed": "STATUS_FAILURE", "failure": "STATUS_FAILURE"}


def _summary(tag: str, plugin_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    return Summary(value=[value])


def hparams_summaries(params: Mapping[str, bool | int | float | str], metric_tags: Iterable[str]) -> list[Any]:
    """The experiment (names and types of hparams and metrics) and session-start (values) summaries."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo()
    infos = []
    for name, value in params.items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
            kind = api_pb2.DATA_TYPE_BOOL
        elif isinstance(value, (int, float)):
            start.hparams[name].number_value = float(value)
            kind = api_pb2.DATA_TYPE_FLOAT64
        else:
            start.hparams[name].string_value = str(value)
            kind = api_pb2.DATA_TYPE_STRING
        infos.append(api_pb2.HParamInfo(name=name, type=kind))
    experiment = api_pb2.Experiment(
        hparam_infos=infos,
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in metric_tags],
    )
    return [
        _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
    ]


def session_end_summary(status: str) -> Any:
    """Marks the hparams session finished: ``success`` and ``failed`` map to TensorBoard's statuses."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    code = api_pb2.Status.Value(_STATUSES.get(status, "STATUS_UNKNOWN"))
    end = plugin_data_pb2.SessionEndInfo(status=code)
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))
