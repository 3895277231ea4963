"""``TensorBoardLogger``: scalars, hyperparameters and the model graph in TensorBoard event files.

The writer is ``torch.utils.tensorboard.SummaryWriter``, which writes through TensorBoard's own
``EventFileWriter`` (so the ``tensorboard`` package is the one real dependency) and can trace a model
into a TensorBoard graph. tensorboardX would add a second writer for nothing: reading files back
needs ``tensorboard`` anyway.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from fabric_core.plugins.logger import NoOpExperiment

from fabric_loggers._hparams_summary import hparams_summaries, session_end_summary
from fabric_loggers._metrics import prepare_metrics
from fabric_loggers._params import flatten, params_to_dict, tensorboard_value
from fabric_loggers._run_logger import RunLogger, Sink

_TENSORBOARD_DEFAULT_FLUSH_SECS = 120
# How long SIGTERM waits for the events still queued to reach the file. Milliseconds in practice; the bound
# matters only when the signal interrupted the user's own call on ``.experiment`` inside the writer's lock.
_SIGTERM_FLUSH_WAIT_S = 5.0


class _TensorBoardSink(Sink):
    """One event file of one run in one process (the writer thread belongs to this process)."""

    def __init__(self, log_dir: str, writer_kwargs: Mapping[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch.utils.tensorboard imports the tensorboard package
            raise ImportError(
                'TensorBoardLogger needs the tensorboard package: pip install "fabric-loggers" (or tensorboard).'
            ) from error

        super().__init__()
        from tensorboard.compat.proto.summary_pb2 import Summary

        self.writer = SummaryWriter(log_dir=log_dir, **writer_kwargs)
        self.hparams_logged = False
        self._summary_types = (Summary, Summary.Value)

    def _write_metrics(self, metrics: Mapping[str, int | float], step: int) -> None:
        # The event ``SummaryWriter.add_scalar`` writes (a ``simple_value`` summary at ``step``), built here
        # directly: its values are plain numbers already, so add_scalar's numpy round trip is skipped.
        file_writer = self._file_writer()
        summary, value_type = self._summary_types
        for name, value in metrics.items():
            file_writer.add_summary(summary(value=[value_type(tag=name, simple_value=float(value))]), step)

    def write_summary(self, summary: Any) -> None:
        with self._library_call():
            self._add_summary(summary)

    def _add_summary(self, summary: Any) -> None:
        self._file_writer().add_summary(summary)

    def _file_writer(self) -> Any:
        """The SummaryWriter's event file writer (open from the sink's creation until close())."""
        file_writer = self.writer.file_writer
        assert file_writer is not None, "the sink's writer is open until close()"
        return file_writer

    def add_graph(self, module: Any, input_array: Any) -> None:
        with self._library_call():
            self.writer.add_graph(module, input_array)

    def _flush(self) -> None:
        self.writer.flush()

    def _close(self, status: str | None) -> None:
        if status is not None and self.hparams_logged:
            self._add_summary(session_end_summary(status))
        self.writer.close()

    def end_terminated(self) -> None:
        """Flush from a helper thread, waiting a bounded time: the signal may have interrupted the user's own
        call on the writer (``logger.experiment.add_image``) while it holds the lock a flush takes, and the
        process must die by SIGTERM rather than hang. Calls through the logger are never interrupted so."""
        if self.pid != os.getpid():
            return
        flusher = threading.Thread(target=self.writer.flush, name="fabric-tensorboard-sigterm-flush", daemon=True)
        flusher.start()
        flusher.join(_SIGTERM_FLUSH_WAIT_S)


class TensorBoardLogger(RunLogger):
    """Log to TensorBoard event files in ``root_dir/name/version_N``; view them with ``tensorboard --logdir root_dir``.

    Args:
        root_dir: the folder that holds all experiments.
        name: the experiment folder under ``root_dir`` (``None`` or ``""``: none).
        version: an int (``version_<int>``), a folder name, or ``None`` for the next free ``version_N``.
        prefix: put before every metric name, joined with ``-`` (``train-loss``).
        sub_dir: a folder inside the version folder to write to (``root_dir/name/version_N/sub_dir``), to
            group runs in TensorBoard (``train``, ``val``).
        default_hp_metric: when ``log_hyperparams`` gets no metrics, log ``hp_metric = -1`` so that
            TensorBoard's HPARAMS tab lists the run (log the real ``hp_metric`` later).
        flush_logs_every_n_steps: flush after this many distinct steps (``None``: only on ``save``,
            ``finalize``, exit and TensorBoard's own timer). A crash loses at most what came after.
        flush_logs_every_n_seconds: also flush when this many seconds have passed since the last flush;
            also TensorBoard's own background flush interval.
        **writer_kwargs: passed to ``SummaryWriter`` (``max_queue``, ``filename_suffix``, ``purge_step``).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        name: str | None = "fabric_logs",
        version: int | str | None = None,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        default_hp_metric: bool = True,
        flush_logs_every_n_steps: int | None = 100,
        flush_logs_every_n_seconds: float | None = None,
        **writer_kwargs: Any,
    ) -> None:
        super().__init__(root_dir, name, version, prefix, flush_logs_every_n_steps, flush_logs_every_n_seconds)
        refused = sorted(set(writer_kwargs) & {"log_dir", "comment"})
        if refused:
            raise TypeError(
                f"TensorBoardLogger sets the folder itself; use root_dir/name/version instead of {refused}."
            )
        writer_kwargs.setdefault("flush_secs", flush_logs_every_n_seconds or _TENSORBOARD_DEFAULT_FLUSH_SECS)
        self._writer_kwargs = writer_kwargs
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._default_hp_metric = default_hp_metric
        # TensorBoard's readers keep the first hparams record of a run (per tag), so a run gets one.
        self._hparams_written = False

    def _create_sink(self, log_dir: str) -> _TensorBoardSink:
        return _TensorBoardSink(log_dir, self._writer_kwargs)

    @property
    def sub_dir(self) -> str | None:
        """The folder inside the version folder that this logger writes to, if any."""
        return self._sub_dir

    @property
    def log_dir(self) -> str:
        """``root_dir/name/version_N`` (``/sub_dir`` when given), with ``~`` and ``$VARS`` expanded."""
        log_dir = super().log_dir
        return os.path.join(log_dir, self._sub_dir) if self._sub_dir else log_dir

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter`` on rank 0, for anything this logger does not wrap: images, histograms, text.

        On other ranks a ``NoOpExperiment``: calls on it do nothing, so the same code runs everywhere.
        """
        if not self.is_writer:
            return NoOpExperiment()
        return self._open_sink().writer  # type: ignore[attr-defined]

    def log_hyperparams(self, params: Mapping[str, Any] | Any, metrics: Mapping[str, Any] | None = None) -> None:
        """Record hyperparameters for the HPARAMS tab; nested dicts become ``outer/inner`` names.

        ``metrics`` (name -> number) are logged at step 0 and listed as the run's metrics beside them.
        TensorBoard keeps one hyperparameter record per run: call this once; later calls only warn
        (their ``metrics`` are still logged).
        """
        flat = {name: tensorboard_value(value) for name, value in flatten(params_to_dict(params)).items()}
        if metrics is None and self._default_hp_metric:
            metrics = {"hp_metric": -1}
        prepared = prepare_metrics(metrics or {}, self._prefix)
        if not self.is_writer:
            return
        sink = self._open_sink()
        assert isinstance(sink, _TensorBoardSink)
        if self._hparams_written:
            warnings.warn(
                "TensorBoard shows only the first hyperparameters written to a run; these later ones are not "
                "recorded. Log all hyperparameters in one log_hyperparams call (or use a new version).",
                UserWarning,
                stacklevel=2,
            )
        else:
            for summary in hparams_summaries(flat, prepared):
                sink.write_summary(summary)
            self._hparams_written = True
            sink.hparams_logged = True
        if prepared:
            sink.write_metrics(prepared, step=0)
        self.save()

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Trace ``model`` on ``input_array`` (or ``model.example_input_array``) into TensorBoard's GRAPHS tab.

        Without either it warns and records nothing, as Lightning does.
        """
        from fabric_core.plugins.tensors import move_to_device
        from fabric_core.plugins.wrapped import unwrap_module
        from torch.nn.parallel import DistributedDataParallel

        module = unwrap_module(model)
        while isinstance(module, DistributedDataParallel):
            module = module.module
        if input_array is None:
            input_array = getattr(module, "example_input_array", None)
        if input_array is None:
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array` attribute is not "
                "set or `input_array` was not given. Pass one, logger.log_graph(model, torch.randn(1, 32)), or set "
                "model.example_input_array.",
                UserWarning,
                stacklevel=2,
            )
            return
        import torch

        if not isinstance(input_array, (torch.Tensor, tuple)):  # what add_graph can trace, as Lightning checks
            warnings.warn(
                "Could not log computational graph to TensorBoard: The `input_array` or `model.example_input_array` "
                f"has type {type(input_array)} which can't be traced by TensorBoard. Make the input array a tuple "
                "representing the positional arguments to the model's `forward()` implementation.",
                UserWarning,
                stacklevel=2,
            )
            return
        if not self.is_writer:
            return
        parameter = next(module.parameters(), None)
        if parameter is not None:
            input_array = move_to_device(input_array, parameter.device)
        sink = self._open_sink()
        assert isinstance(sink, _TensorBoardSink)
        sink.add_graph(module, input_array)
        self.save()
