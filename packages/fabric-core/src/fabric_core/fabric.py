"""The ``Fabric`` facade: each method delegates to the strategy resolved at construction."""

from __future__ import annotations

import functools
import inspect
import warnings
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from fabric_core.connector import resolve_plan
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.logger import Logger
from fabric_core.utilities import seed as _seed
from fabric_core.utilities.apply_func import apply_to_tensors
from fabric_core.utilities.signals import RequeueSignals
from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule, is_wrapped, unwrap_compiled
from fabric_core.wrappers.optimizer import _FabricOptimizer

if TYPE_CHECKING:
    from concurrent.futures import Future

    from torch.distributed import ReduceOp
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    from fabric_core.plugins.accelerator import Accelerator
    from fabric_core.plugins.checkpoint_io import CheckpointIO
    from fabric_core.plugins.environment import ClusterEnvironment
    from fabric_core.plugins.precision import Precision
    from fabric_core.plugins.strategy import Strategy

    _PluginInput = Precision | ClusterEnvironment | CheckpointIO
    _Collection = dict[Any, Any] | list[Any] | tuple[Any, ...]

_REDUCE_OPS = ("sum", "mean", "max", "min")
_REDUCE_ALIASES = {"avg": "mean"}
#: the entry-point group through which installed packages add callbacks (Lightning: lightning.fabric.callbacks_factory)
CALLBACKS_GROUP = "fabric_core.callbacks"


def _do_nothing(*_: Any) -> None:
    """The default of ``Fabric.launch``: no function given (an explicit ``None`` is refused)."""


class Fabric:
    """Accelerates your PyTorch training or inference code with minimal changes.

    Args:
        accelerator: ``"auto"``, ``"cpu"``, ``"cuda"``/``"gpu"``, ``"tpu"``/``"xla"`` (the last two need
            their packages), or an ``Accelerator`` instance.
        strategy: ``"auto"``, ``"ddp"``, ``"ddp_spawn"``, ``"fsdp"``, ``"deepspeed_stage_2"`` ... or a
            ``Strategy`` instance.
        devices: how many devices (or which) per node: an int, ``-1``, ``"auto"``, ``"0,1"``, a list.
        num_nodes: number of machines.
        precision: ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``, ``"bf16-true"``, ``"16-true"``,
            ``"64-true"`` or the older ``32``, ``64``, ``16``, ``"bf16"``.
        plugins: ``Precision``, ``ClusterEnvironment`` or ``CheckpointIO`` instances.
        callbacks: objects whose methods ``fabric.call(name, ...)`` invokes.
        loggers: ``Logger`` instances that ``fabric.log`` writes to, or registered names (``"tensorboard"``,
            ``"csv"``, ``"mlflow"``, ``"wandb"``, ...) built with their defaults.
    """

    def __init__(
        self,
        *,
        accelerator: str | Accelerator | None = None,
        strategy: str | Strategy | None = None,
        devices: list[int] | str | int | None = None,
        num_nodes: int = 1,
        precision: str | int | None = 32,
        plugins: _PluginInput | list[_PluginInput] | None = None,
        callbacks: list[object] | object | None = None,
        loggers: Logger | str | list[Logger | str] | None = None,
    ) -> None:
        plan = resolve_plan(accelerator, strategy, devices, num_nodes, precision, plugins)
        self._plan = plan
        self._strategy = plan.strategy
        self._accelerator = plan.accelerator
        self._precision = plan.precision
        self._callbacks = _configure_callbacks(callbacks)
        self._loggers = _validate_loggers(loggers)
        self._environment_ready = False
        self._launched = False
        self._requeue_signals = RequeueSignals()  # armed by the first read of requeue_requested
        self._set_up_modules: weakref.WeakSet[Module] = weakref.WeakSet()  # ids could be reused
        self._set_up_optimizers: weakref.WeakSet[Optimizer] = weakref.WeakSet()
        # Nothing between the loss and autograd: fabric.backward can call tensor.backward directly.
        from fabric_core.plugins.strategy import Strategy

        self._plain_backward = (
            type(self._strategy).backward is Strategy.backward
            and self._precision.plain_backward_and_step
            and not self._strategy.requires_fabric_backward()
        )
        if type(self).run is not Fabric.run:
            # The older subclass style: calling ``run`` launches the processes first.
            user_run = self.run
            self.run = functools.partial(self._run_impl, user_run)  # type: ignore[method-assign]

    def __getstate__(self) -> dict[str, Any]:
        # Sent to spawned workers: the weak set of modules set up here does not travel (and cannot pickle).
        state = self.__dict__.copy()
        state["_set_up_modules"] = state["_set_up_optimizers"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._set_up_modules = weakref.WeakSet()
        self._set_up_optimizers = weakref.WeakSet()

    # ------------------------------------------------------------------ properties
    @property
    def strategy(self) -> Strategy:
        """The strategy this Fabric delegates to."""
        return self._strategy

    @property
    def accelerator(self) -> Accelerator:
        """The accelerator (device kind) this Fabric runs on."""
        return self._accelerator

    @property
    def device(self) -> torch.device:
        """The current device this process runs on."""
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        """The global index of the current process across all devices and nodes."""
        return self._strategy.global_rank

    @property
    def local_rank(self) -> int:
        """The index of the current process among the processes on its node."""
        return self._strategy.local_rank

    @property
    def node_rank(self) -> int:
        """The index of the current node."""
        return self._strategy.node_rank

    @property
    def world_size(self) -> int:
        """The total number of processes across all devices and nodes."""
        return self._strategy.world_size

    @property
    def is_global_zero(self) -> bool:
        """Whether this rank is rank zero."""
        return self._strategy.is_global_zero

    @property
    def logger(self) -> Logger:
        """The first logger passed to Fabric."""
        if not self._loggers:
            raise AttributeError("No logger was passed to Fabric(loggers=...).")
        return self._loggers[0]

    @property
    def loggers(self) -> list[Logger]:
        """All loggers passed to Fabric."""
        return self._loggers

    @property
    def requeue_requested(self) -> bool:
        """Whether the scheduler asked the job to stop: SIGUSR1 or SIGTERM reached any rank. Save and exit.

        SLURM sends SIGUSR1 before the time limit (``sbatch --signal=USR1@90``) and SIGTERM when it
        preempts or cancels the job. The first read installs the handlers; from then on these
        signals only set this flag and the loop decides when to stop. In a multi-process job every
        rank must read it at the same point of the loop (one small all-reduce), so that all ranks
        see the same answer and stop at the same step.
        """
        received = self._requeue_signals.watch()
        if self.world_size > 1 and self._environment_ready:
            flag = torch.tensor(int(received), device=self.device)
            received = bool(self._strategy.all_reduce(flag, reduce_op="max").item())
        return received

    # ------------------------------------------------------------------- launching
    def launch(self, function: Callable[..., Any] = _do_nothing, *args: Any, **kwargs: Any) -> Any:
        """Start the processes of the job.

        ``launch()`` continues in the current process as rank 0 (strategies that re-run the script
        for the other ranks, or jobs started by torchrun/SLURM). ``launch(fn, *args)`` runs
        ``fn(fabric, *args)`` in every process and returns rank 0's result. Passing anything that is
        not callable (``None`` included, as in the slip ``fabric.launch(train(fabric))``) is an error.
        """
        if self._launched:
            raise RuntimeError("fabric.launch() was already called; call it once, at the start of your script.")
        if function is _do_nothing:
            function = None  # type: ignore[assignment]
        else:
            _check_launch_function(self, function, args, kwargs)
        launcher = None if self._strategy.cluster_environment.creates_processes_externally else self._strategy.launcher  # type: ignore[union-attr]
        if function is None and launcher is not None and not launcher.continues_in_caller:
            raise _LaunchNeedsFunctionError(
                f"To spawn processes with strategy {self._strategy.name!r}, `.launch()` needs to be called with a "
                "function that contains the code to run in them: the strategy starts new processes and needs the "
                "function to run in them, as in fabric.launch(train) where train(fabric, ...) is your training function."
            )
        self._launched = True
        if function is None:
            if launcher is not None:
                launcher.launch(lambda: None)
            self._setup_environment()
            return None
        worker = functools.partial(_run_worker, self, function)
        if launcher is None:
            return worker(*args, **kwargs)
        return launcher.launch(worker, *args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Override in a subclass: everything inside runs accelerated (the older Fabric style)."""
        raise NotImplementedError("Override Fabric.run in a subclass, or use fabric.launch() in a plain script.")

    def _run_impl(self, run_method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._launched = False
        return self.launch(_call_bound, run_method, *args, **kwargs)

    def _setup_environment(self) -> None:
        if not self._environment_ready:
            self._strategy.setup_environment()
            self._environment_ready = True
            self._launched = True
            for logger in self._loggers:
                set_rank = getattr(logger, "set_global_rank", None)
                if callable(set_rank):
                    set_rank(self._strategy.global_rank)

    def _ensure_environment(self) -> None:
        if self._environment_ready:
            return
        launcher = self._strategy.launcher
        if launcher is not None and not self._strategy.cluster_environment.creates_processes_externally:  # type: ignore[union-attr]
            raise RuntimeError(
                f"strategy {self._strategy.name!r} runs {self._strategy.world_size if self._launched else 'several'} "
                "processes: call fabric.launch() before setting anything up."
            )
        self._setup_environment()

    # ---------------------------------------------------------------------- set-up
    def setup(
        self,
        module: Module,
        *optimizers: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None = None,
        move_to_device: bool = True,
    ) -> _FabricModule | tuple[_FabricModule | _FabricOptimizer | LRScheduler | ReduceLROnPlateau, ...]:
        """Set up a model and its optimizers; returns them wrapped, in the order given.

        A ``scheduler`` passed here is handed to strategies that drive it themselves and returned last.
        A model with a ``_fabric`` attribute (Lightning's LightningModule contract) gets this Fabric
        assigned there and joins the callbacks, so its own hooks and ``self.log`` work; callbacks then
        receive ``on_after_setup(fabric=..., module=...)``.
        """
        self._ensure_environment()
        self._check_module(module, "setup")
        for optimizer in optimizers:
            self._check_optimizer(optimizer, "setup")
        original = unwrap_compiled(module)
        compiled = module if original is not module else None
        original = self._precision.convert_module(original)
        if move_to_device:
            self._strategy.module_to_device(original)
        forward_module, new_optimizers, scheduler = self._strategy.setup_module_and_optimizers(
            original, list(optimizers), scheduler
        )
        fabric_module = self._wrap_module(forward_module, original, compiled)
        self._attach_to_model(original)
        wrapped = [self._wrap_optimizer(o) for o in new_optimizers]
        if _has_fabric_attribute(original):
            original._fabric_optimizers = wrapped  # type: ignore[assignment]
        self._set_up_modules.add(original)
        self.call("on_after_setup", fabric=self, module=fabric_module)
        outputs: list[Any] = [fabric_module, *wrapped]
        if scheduler is not None:
            outputs.append(scheduler)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def setup_module(self, module: Module, move_to_device: bool = True) -> _FabricModule:
        """Set up a model without optimizers (for inference, or before creating optimizers with FSDP).

        Like ``setup`` it connects a LightningModule-style model and calls ``on_after_setup``.
        """
        self._ensure_environment()
        self._check_module(module, "setup_module")
        original = unwrap_compiled(module)
        compiled = module if original is not module else None
        original = self._precision.convert_module(original)
        if move_to_device:
            self._strategy.module_to_device(original)
        forward_module = self._strategy.setup_module(original)
        self._set_up_modules.add(original)
        fabric_module = self._wrap_module(forward_module, original, compiled)
        self._attach_to_model(original)
        self.call("on_after_setup", fabric=self, module=fabric_module)
        return fabric_module

    def setup_optimizers(self, *optimizers: Optimizer) -> _FabricOptimizer | tuple[_FabricOptimizer, ...]:
        """Set up optimizers created for a module that went through ``setup_module``."""
        self._ensure_environment()
        if self._strategy.requires_joint_setup:
            raise RuntimeError(
                f"strategy {self._strategy.name!r} sets up model and optimizer together: "
                "use model, optimizer = fabric.setup(model, optimizer)."
            )
        if not optimizers:
            raise ValueError("setup_optimizers needs at least one optimizer.")
        for optimizer in optimizers:
            self._check_optimizer(optimizer, "setup_optimizers")
        wrapped = [self._wrap_optimizer(self._strategy.setup_optimizer(o)) for o in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def setup_dataloaders(
        self,
        *dataloaders: DataLoader[Any],
        replace_sampler: bool = True,
        move_to_device: bool = True,
        use_distributed_sampler: bool | None = None,
    ) -> Any:
        """Set up dataloaders: a distributed sampler when several processes run, batches moved to the device.

        ``use_distributed_sampler`` is the newer name of ``replace_sampler``.
        """
        if not dataloaders:
            raise ValueError("`setup_dataloaders` requires at least one dataloader as input.")
        if not self._launched:  # the sampler needs world size and rank, known once launched (no process group)
            self._ensure_environment()
        replace = replace_sampler if use_distributed_sampler is None else use_distributed_sampler
        from fabric_core.utilities.data import prepare_dataloader

        wrapped = []
        for loader in dataloaders:
            if isinstance(loader, _FabricDataLoader):
                raise ValueError(
                    "A dataloader should be passed only once to the `setup_dataloaders` method: this one was already "
                    "set up. Pass the original DataLoader."
                )
            if not isinstance(loader, DataLoader):
                raise TypeError(
                    f"Only PyTorch DataLoader are currently supported in `setup_dataloaders`, got {type(loader).__name__}."
                )
            loader = prepare_dataloader(loader, self._strategy, replace_sampler=replace)
            device = self.device if move_to_device else None  # reported as Lightning does (cpu on CPUs)
            wrapped.append(_FabricDataLoader(loader, device=device, strategy=self._strategy))
        return wrapped[0] if len(wrapped) == 1 else wrapped

    def _wrap_module(self, forward_module: Module, original: Module, compiled: Module | None) -> _FabricModule:
        if compiled is not None:
            if forward_module is original:
                forward_module = compiled
            else:
                from torch._dynamo.eval_frame import OptimizedModule

                # Compile the strategy's wrapper with the user's own compile settings.
                forward_module = OptimizedModule(forward_module, compiled.dynamo_ctx)  # type: ignore[arg-type]
        return _FabricModule(forward_module, self._strategy, original)

    def _wrap_optimizer(self, optimizer: Optimizer) -> _FabricOptimizer:
        self._set_up_optimizers.add(optimizer)
        if self._strategy.requires_fabric_backward():
            # Stepping the original optimizer would skip the scaler / engine: refuse it clearly.
            optimizer.register_step_pre_hook(functools.partial(_refuse_raw_step, self._strategy))
        return _FabricOptimizer(optimizer, self._strategy, self._callbacks)

    def _check_module(self, module: Any, method: str) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"fabric.{method} expects a torch.nn.Module, got {type(module).__name__}.")
        if is_wrapped(module):
            raise ValueError(
                f"A model should be passed only once to the `{method}` method: this one was already set up (it is "
                "what fabric.setup returned). Pass the original module."
            )
        if unwrap_compiled(module) in self._set_up_modules and self._strategy.is_distributed:
            # As in Lightning, a single-process strategy may set up the same module again (a new wrapper around
            # it); a distributed one would wrap the same parameters twice (two DDP reducers, sharding twice).
            raise ValueError(
                f"This module was already set up by this Fabric; with strategy {self._strategy.name!r} a second set-up "
                "would wrap the same parameters twice and corrupt gradient synchronisation. Set it up once and reuse "
                "the module fabric.setup returned."
            )

    def _check_optimizer(self, optimizer: Any, method: str) -> None:
        if isinstance(optimizer, _FabricOptimizer):
            raise ValueError(
                f"An optimizer should be passed only once to the `{method}` method: this one was already set up (it "
                "is what Fabric returned). Pass the original optimizer."
            )
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"fabric.{method} expects torch.optim.Optimizer instances, got {type(optimizer).__name__}.")
        if optimizer in self._set_up_optimizers and self._strategy.is_distributed:
            raise ValueError(
                f"This optimizer was already set up by this Fabric; with strategy {self._strategy.name!r} a second "
                "set-up would prepare its state twice. Set it up once and reuse the optimizer Fabric returned."
            )

    def _attach_to_model(self, original: Module) -> None:
        """Connect a LightningModule-style model (one with a ``_fabric`` attribute) to this Fabric."""
        if not _has_fabric_attribute(original):
            return
        original._fabric = self  # type: ignore[assignment]
        if not any(callback is original for callback in self._callbacks):
            self._callbacks.append(original)

    # -------------------------------------------------------------------- training
    def backward(self, tensor: Tensor, *args: Any, model: _FabricModule | None = None, **kwargs: Any) -> None:
        """Replaces ``loss.backward()``: runs through the precision plugin and the strategy."""
        if self._plain_backward:
            tensor.backward(*args, **kwargs)  # type: ignore[no-untyped-call]
            return
        module = model._forward_module if isinstance(model, _FabricModule) else model
        strategy = self._strategy
        strategy.in_fabric_backward = True
        try:
            strategy.backward(tensor, module, *args, **kwargs)
        finally:
            strategy.in_fabric_backward = False

    def clip_gradients(
        self,
        module: Module,
        optimizer: Optimizer,
        clip_val: float | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor | None:
        """Clip gradients by value (``clip_val``) or by total norm (``max_norm``, whose norm is returned)."""
        if (clip_val is None) == (max_norm is None):
            raise ValueError("clip_gradients needs exactly one of clip_val or max_norm.")
        inner_module = module._forward_module if isinstance(module, _FabricModule) else module
        inner_optimizer = optimizer.optimizer if isinstance(optimizer, _FabricOptimizer) else optimizer
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(
                inner_module,
                inner_optimizer,
                max_norm=max_norm,
                norm_type=norm_type,
                error_if_nonfinite=error_if_nonfinite,
            )
        self._strategy.clip_gradients_value(inner_module, inner_optimizer, clip_val=cast(float, clip_val))
        return None

    def autocast(self) -> AbstractContextManager[object]:
        """Run the enclosed operations in the chosen precision (the module's forward already does)."""
        return self._precision.forward_context()

    def to_device(self, obj: Module | Tensor | _Collection) -> Module | Tensor | _Collection:
        """Move a module, a tensor or a collection of tensors to this process's device."""
        if isinstance(obj, Module):
            self._strategy.module_to_device(obj)
            return obj
        return self._strategy.batch_to_device(obj)  # type: ignore[no-any-return]

    def no_backward_sync(self, module: _FabricModule, enabled: bool = True) -> AbstractContextManager[object]:
        """Skip gradient synchronisation for the enclosed forward and backward (gradient accumulation)."""
        if not isinstance(module, _FabricModule):
            raise TypeError(
                "You need to set up the model first before you can call `fabric.no_backward_sync()`: it expects the "
                "module returned by fabric.setup."
            )
        if not enabled:
            return nullcontext()
        if not self._strategy.supports_no_backward_sync:
            several_devices = self._strategy.is_distributed or self._strategy.one_process_drives_all_devices
            if several_devices and self.is_global_zero:
                from fabric_core.utilities.warnings import PossibleUserWarning

                warnings.warn(
                    f"strategy {self._strategy.name!r} cannot skip gradient synchronisation; no_backward_sync has no effect.",
                    PossibleUserWarning,
                    stacklevel=2,
                )
            return nullcontext()
        return self._strategy.no_backward_sync(module._forward_module, enabled)

    # --------------------------------------------------------------- collectives
    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this call."""
        self._ensure_environment()
        self._strategy.barrier(name=name)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send ``obj`` from process ``src`` to all processes."""
        self._ensure_environment()
        return self._strategy.broadcast(obj, src=src)

    def all_gather(
        self, data: Tensor | _Collection | int | float, group: object | None = None, sync_grads: bool = False
    ) -> Tensor | _Collection:
        """Gather tensors (or collections of them, numbers included) from all processes.

        Each tensor comes back with a leading dimension of size world size. As in Lightning, with a
        single-process strategy (no process group) the data comes back unchanged, without that dimension.
        """
        self._ensure_environment()
        data = _numbers_to_tensors(data, self.device)
        return apply_to_tensors(data, lambda t: self._strategy.all_gather(t, group=group, sync_grads=sync_grads))  # type: ignore[no-any-return]

    def all_reduce(
        self, data: Tensor | _Collection | int | float, group: object | None = None, reduce_op: str | ReduceOp = "mean"
    ) -> Tensor | _Collection:
        """Reduce tensors (or collections of them) over all processes.

        ``reduce_op`` is ``"sum"``, ``"mean"`` (or ``"avg"``), ``"max"``, ``"min"`` in any case, or the matching
        ``torch.distributed.ReduceOp`` value (``SUM``, ``AVG``, ``MAX``, ``MIN``).
        """
        reduce_op = _reduce_op_name(reduce_op)
        self._ensure_environment()
        data = _numbers_to_tensors(data, self.device)
        return apply_to_tensors(data, lambda t: self._strategy.all_reduce(t, group=group, reduce_op=reduce_op))  # type: ignore[no-any-return]

    @contextmanager
    def rank_zero_first(self, local: bool = False) -> Generator[None, None, None]:
        """Let rank 0 (or local rank 0 of each node) run the block before the others (downloads, caches)."""
        self._ensure_environment()
        first = self.local_rank == 0 if local else self.global_rank == 0
        if not first:
            self.barrier("rank_zero_first")
        yield
        if first:
            self.barrier("rank_zero_first")

    # ------------------------------------------------------------------- creation
    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """Create the module's parameters directly on the device, in the target dtype.

        ``empty_init=True`` skips random initialisation (for weights you load next); sharding
        strategies create the module on the meta device.
        """
        self._ensure_environment()
        return self._strategy.module_init_context(empty_init=empty_init)

    def init_tensor(self) -> AbstractContextManager[object]:
        """Create tensors directly on the device, in the target dtype."""
        self._ensure_environment()
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(self._strategy.tensor_init_context())
        stack.enter_context(self._precision.tensor_init_context())
        return stack

    def sharded_model(self) -> AbstractContextManager[object]:
        """Shard parameters as layers are created (the reference page's name for ``init_module``).

        Deprecated as in Lightning: it still works, with a ``DeprecationWarning`` pointing to ``init_module``.
        """
        from fabric_core.utilities.rank_zero import rank_zero_deprecation

        rank_zero_deprecation(
            "`Fabric.sharded_model()` is deprecated in favor of `Fabric.init_module()`.", stacklevel=4
        )
        return self.init_module()

    # ----------------------------------------------------------------- checkpoints
    def save(
        self,
        path: str | Path,
        state: dict[str, Any],
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        *,
        storage_options: dict[str, Any] | None = None,
        async_: bool = False,
    ) -> Future[None] | None:
        """Save ``state`` (modules, optimizers, anything with ``state_dict``, plain values) to ``path``.

        ``path`` may be an fsspec URL (``s3://bucket/ck``); ``storage_options`` go to its filesystem.
        With ``async_=True`` the state is snapshotted and written in the background: the returned
        future completes when the checkpoint is on storage. The reference page's order
        ``save(content, filepath)`` is accepted too.
        """
        if isinstance(path, dict) and isinstance(state, (str, Path)):
            path, state = state, path
        _check_save_filter(filter, state)
        self._ensure_environment()
        extra: dict[str, Any] = {"storage_options": storage_options} if storage_options is not None else {}
        if async_:
            extra["async_"] = True
        handle = self._strategy.save_checkpoint(path, state, filter=filter, **extra)
        _hand_checkpoint_to_loggers(self._loggers, path, handle if async_ else None)
        return handle if async_ else None

    def load(
        self,
        path: str | Path,
        state: dict[str, Any] | None = None,
        strict: bool = True,
        weights_only: bool = True,
        *,
        verify: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Load ``path``: restore into ``state`` in place and return what ``state`` did not ask for.

        Without ``state`` the whole checkpoint is returned. Loading executes no code from the file
        unless ``weights_only=False``. Checksums are verified unless ``verify=False``; ``storage_options``
        go to the fsspec filesystem of a URL ``path``.
        """
        self._ensure_environment()
        from fabric_core.plugins.checkpoint_io import load_options

        return self._strategy.load_checkpoint(
            path, state=state, strict=strict, weights_only=weights_only, **load_options(verify, storage_options)
        )

    def load_raw(
        self, path: str | Path, obj: Module | Optimizer, strict: bool = True, weights_only: bool = True
    ) -> None:
        """Load a raw state dict (as saved by ``torch.save(model.state_dict())``) into a module or optimizer."""
        self._ensure_environment()
        from fabric_core.checkpoint.state import restore_object

        data = self._strategy.checkpoint_io.load_checkpoint(path, map_location="cpu", weights_only=weights_only)
        if not restore_object(self._strategy, obj, data, strict=strict):
            raise TypeError(f"load_raw loads into a module or an optimizer, got {type(obj).__name__}.")

    def exact_resume(self, *dataloaders: _FabricDataLoader) -> Any:
        """A checkpoint entry for bit-exact resumption: RNG states of every rank and the loaders' positions.

        ``state = {"model": model, "optimizer": optimizer, "resume": fabric.exact_resume(train_loader)}``;
        save and load ``state`` as usual.
        """
        from fabric_core.utilities.exact_resume import ExactResume

        return ExactResume(self._strategy, dataloaders)

    # --------------------------------------------------------------------- misc
    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print only on global rank 0."""
        if self.global_rank == 0:
            print(*args, **kwargs)

    @staticmethod
    def seed_everything(seed: int | None = None, workers: bool | None = None, verbose: bool = True) -> int:
        """Seed Python, NumPy and torch; also seeds dataloader workers per rank unless ``workers=False``.

        As in Lightning, ``workers`` defaults to ``True`` here (and to ``False`` in the plain function):
        ``setup_dataloaders`` then installs a worker init function in every loader it sets up.
        """
        return _seed.seed_everything(seed, workers=True if workers is None else workers, verbose=verbose)

    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook_name(*args, **kwargs)`` on every callback that defines it.

        Each hook receives only the keyword arguments its signature names (all of them if it takes
        ``**kwargs``), so callbacks may declare just what they use. An attribute of that name that is
        not callable is skipped with a warning.
        """
        for callback in self._callbacks:
            method = getattr(callback, hook_name, None)
            if method is None:
                continue
            if not callable(method):
                from fabric_core.utilities.rank_zero import rank_zero_warn

                rank_zero_warn(
                    f"Skipping the callback `{type(callback).__name__}.{hook_name}` because it is not callable.",
                    stacklevel=3,
                )
                continue
            method(*args, **(_kwargs_for(method, kwargs) if kwargs else kwargs))

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Log a scalar to every logger (tensors are detached and turned into numbers)."""
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several scalars at once; without ``step`` each logger counts its own steps (as in Lightning)."""
        if not self._loggers:
            return
        plain = {name: _to_number(name, value) for name, value in metrics.items()}
        for logger in self._loggers:
            logger.log_metrics(metrics=plain, step=step)  # by keyword, as Lightning calls it

    # ------------- conveniences (accumulation, evaluation, profiling, progress)
    def accumulate(
        self, model: _FabricModule, steps: int, dataloader: Any = None, remaining: int | None = None
    ) -> AbstractContextManager[Any]:
        """Accumulate gradients over ``steps`` micro-steps: open it around each micro-step's forward,
        ``fabric.backward``, ``optimizer.step()`` and ``optimizer.zero_grad()``.

        Before a window's last micro-step gradients are not synchronised and ``step``/``zero_grad``
        do nothing; losses are scaled by ``1/window``. A short last window at the end of the epoch is
        found from ``dataloader`` (the Fabric loader being iterated) or ``remaining`` (micro-batches
        left, this one included). Yields an ``AccumulationStep`` whose ``boundary`` says whether the
        optimizer steps now.
        """
        from fabric_core.utilities.accumulation import accumulate

        return accumulate(self, model, steps, dataloader=dataloader, remaining=remaining)

    def gather_for_metrics(self, data: Any, dataloader: Any = None) -> Any:
        """Gather per-sample outputs (tensors or collections of them) from every process, concatenated.

        Pass the Fabric ``dataloader`` the batch came from: on its last batch the samples its
        ``DistributedSampler`` repeated to even out the ranks are dropped, so metrics over the
        dataset are exact. One process: ``data`` is returned unchanged.
        """
        if self.world_size == 1:
            return data
        self._ensure_environment()
        from fabric_core.utilities.gather_for_metrics import gather_for_metrics, padded_ranks

        if dataloader is None:
            padded, whole = set(), False  # type: ignore[var-annotated]
            if self.is_global_zero and not self.__dict__.get("_warned_gather_for_metrics"):
                self.__dict__["_warned_gather_for_metrics"] = True
                warnings.warn(
                    "gather_for_metrics was called without dataloader=: samples a DistributedSampler repeated to "
                    "even out the processes cannot be dropped. Pass the loader the batch came from.",
                    stacklevel=2,
                )
        else:
            padded, whole = padded_ranks(dataloader, self.world_size)
        return gather_for_metrics(self._strategy, _numbers_to_tensors(data, self.device), padded, whole)

    @contextmanager
    def split_between_processes(self, items: Any, apply_padding: bool = False) -> Generator[Any, None, None]:
        """Give this process its contiguous share of ``items`` (list, tuple, tensor, or dict of them).

        The first ``len % world_size`` processes get one item more; ``apply_padding=True`` fills the
        shorter shares with copies of the last item so all have the same length.
        """
        from fabric_core.utilities.split import split_items

        yield split_items(items, self.world_size, self.global_rank, apply_padding=apply_padding)

    def profile(
        self,
        schedule: Mapping[str, int] | Callable[[int], Any] | None = None,
        output_dir: str | Path | None = None,
        **profiler_kwargs: Any,
    ) -> AbstractContextManager[Any]:
        """Profile the enclosed code with ``torch.profiler``; yields the profiler (call ``prof.step()``).

        ``schedule``: ``{"wait": 1, "warmup": 1, "active": 3}`` or a ``torch.profiler.schedule``;
        without one the whole block is one trace. Each rank writes ``rank<N>.<time>.pt.trace.json``
        (Chrome/TensorBoard format) to ``output_dir``, else the first logger's folder, else
        ``./fabric_profiles``. Other keyword arguments go to ``torch.profiler.profile``.
        """
        from fabric_core.utilities.profiling import profile

        return profile(self, schedule=schedule, output_dir=output_dir, **profiler_kwargs)

    def progress(
        self,
        iterable: Iterable[Any],
        desc: str | None = None,
        total: int | None = None,
        every: float = 10.0,
        mode: str = "auto",
        **tqdm_kwargs: Any,
    ) -> Iterable[Any]:
        """Show progress over ``iterable`` on global rank 0; the other ranks get ``iterable`` itself.

        A tqdm bar in a terminal or notebook; in logs (not a terminal) or without tqdm installed, a
        line each ``every`` percent. ``mode`` is ``"auto"``, ``"bar"`` or ``"lines"``.
        """
        if not self.is_global_zero:
            return iterable
        from fabric_core.utilities.progress import progress_bar

        return progress_bar(iterable, desc=desc, total=total, every=every, mode=mode, **tqdm_kwargs)  # type: ignore[arg-type]


def _refuse_raw_step(strategy: Any, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    if not strategy.in_fabric_step:
        raise RuntimeError(
            f"optimizer.step() was called on the optimizer you passed to fabric.setup, not on the one it returned. With "
            f"strategy {strategy.name!r} and precision {strategy.precision.name!r} that would skip "
            "gradient scaling / the engine: use the optimizer returned by fabric.setup."
        )


def _run_worker(fabric: Fabric, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What runs in each process: join the job, then the user's function."""
    fabric._setup_environment()
    return function(fabric, *args, **kwargs)


def _call_bound(fabric: Fabric, run_method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return run_method(*args, **kwargs)


class _LaunchNeedsFunctionError(MisconfigurationError, TypeError):
    """``launch()`` without a function under a strategy that spawns processes (a TypeError, as in Lightning)."""


def _check_launch_function(fabric: Fabric, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse, before any process starts, a function that cannot be called as ``function(fabric, *args, **kwargs)``."""
    if not callable(function):
        raise TypeError(
            f"`Fabric.launch(...)` needs to be a callable, but got {function!r}: fabric.launch expects a function (or "
            "nothing). HINT: write fabric.launch(train) instead of fabric.launch(train())."
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins and C functions: nothing to check
        return
    name = getattr(function, "__name__", repr(function))
    if not signature.parameters:
        raise TypeError(
            f"fabric.launch(function={name}) needs to take at least one argument: the launcher passes the Fabric "
            f"object first, so write `def {name}(fabric, ...)`."
        )
    try:
        signature.bind(fabric, *args, **kwargs)
    except TypeError as err:
        raise TypeError(
            f"fabric.launch cannot call {name}(fabric, ...) with the arguments given ({err}). The launcher passes the "
            f"Fabric object as the first argument, followed by the extra arguments of fabric.launch."
        ) from None


def _kwargs_for(method: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``method`` accepts (all of them when it takes ``**kwargs`` or has no signature)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {
        k: v
        for k, v in kwargs.items()
        if k in parameters and parameters[k].kind is not inspect.Parameter.POSITIONAL_ONLY
    }


def _configure_callbacks(callbacks: Any) -> list[Any]:
    """The user's callbacks followed by those installed packages register under ``fabric_core.callbacks``."""
    from fabric_core.utilities.external_callbacks import load_external_callbacks

    return [*_as_list(callbacks, "callbacks"), *load_external_callbacks(CALLBACKS_GROUP)]


def _has_fabric_attribute(module: Module) -> bool:
    """Whether ``module`` follows Lightning's LightningModule contract (it declares a ``_fabric`` attribute)."""
    return hasattr(module, "_fabric")


def _reduce_op_name(reduce_op: Any) -> str:
    """Fabric's name for ``reduce_op``: a name in any case, ``"avg"``, or a ``torch.distributed.ReduceOp``."""
    if isinstance(reduce_op, str):
        name = _REDUCE_ALIASES.get(reduce_op.lower(), reduce_op.lower())
        if name in _REDUCE_OPS:
            return name
    elif not isinstance(reduce_op, (int, float)):  # plain numbers compare equal to ReduceOp members
        import torch.distributed as dist

        ops = getattr(dist, "ReduceOp", None)
        kinds = tuple(k for k in (ops, getattr(ops, "RedOpType", None)) if isinstance(k, type))
        if kinds and isinstance(reduce_op, kinds):
            for op_name, name in (("SUM", "sum"), ("AVG", "mean"), ("MAX", "max"), ("MIN", "min")):
                if reduce_op == getattr(ops, op_name):
                    return name
    raise ValueError(
        f"reduce_op={reduce_op!r} is not supported; choose one of {', '.join(_REDUCE_OPS)}, 'avg', or "
        "torch.distributed.ReduceOp.SUM / AVG / MAX / MIN."
    )


def _check_save_filter(filter: Any, state: Any) -> None:
    """Validate ``fabric.save(..., filter=...)`` before anything is written (Lightning's checks and errors)."""
    if filter is None:
        return
    if not isinstance(filter, dict):
        raise TypeError(f"Filter should be a dictionary of state key -> callable(name, value), given {filter!r}.")
    if isinstance(state, dict) and not set(filter).issubset(state):
        raise ValueError(f"The filter keys {set(filter) - set(state)} are not present in the state keys {set(state)}.")
    for key, value in filter.items():
        if not callable(value):
            raise TypeError(f"Expected `fabric.save(filter=...)` for key {key!r} to be a callable, given {value!r}.")


def _as_list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _validate_loggers(loggers: Any) -> list[Logger]:
    """Logger instances as given; names (``"tensorboard"``, ``"mlflow"``) built through the logger entry points."""
    items = _as_list(loggers, "loggers")
    built = []
    for item in items:
        if isinstance(item, str):
            from fabric_core.loggers import logger_from_name

            item = logger_from_name(item)
        elif not isinstance(item, Logger) and not callable(getattr(item, "log_metrics", None)):
            raise MisconfigurationError(
                "loggers accepts Logger instances (for example fabric_loggers.TensorBoardLogger) or registered "
                f"names such as 'tensorboard', got {item!r}."
            )
        built.append(item)
    return built


def _hand_checkpoint_to_loggers(loggers: list[Logger], path: str | Path, pending: Any = None) -> None:
    """Loggers built with ``log_checkpoints=True`` record each checkpoint ``fabric.save`` wrote (on rank 0).

    For an asynchronous save (``pending`` is its future) they get it once the write has finished.
    """
    wanting = [logger for logger in loggers if getattr(logger, "wants_checkpoints", False)]
    if not wanting:
        return

    def hand_over(future: Any = None) -> None:
        if future is not None and (future.cancelled() or future.exception() is not None):
            return  # nothing complete to record; the save's own error reaches the user through the future
        for logger in wanting:
            logger.log_checkpoint(str(path))

    if pending is not None and callable(getattr(pending, "add_done_callback", None)):
        pending.add_done_callback(hand_over)
    else:
        hand_over()


def _to_number(name: str, value: Any) -> Any:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"fabric.log({name!r}) got a tensor with {value.numel()} elements and it cannot be converted to a "
                "scalar. Log a single number, e.g. its mean."
            )
        return value.detach().item()
    return value


def _numbers_to_tensors(data: Any, device: torch.device) -> Any:
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return torch.tensor(data, device=device)
    if isinstance(data, dict):
        return {k: _numbers_to_tensors(v, device) for k, v in data.items()}
    if isinstance(data, (list, tuple)) and not hasattr(data, "_fields"):
        return type(data)(_numbers_to_tensors(v, device) for v in data)
    return data
