"""The ``Fabric`` facade: each method delegates to the strategy resolved at construction."""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

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
from fabric_core.wrappers.dataloader import _FabricDataLoader
from fabric_core.wrappers.module import _FabricModule, is_wrapped, unwrap_compiled
from fabric_core.wrappers.optimizer import _FabricOptimizer

_REDUCE_OPS = ("sum", "mean", "max", "min")


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
        loggers: ``Logger`` instances that ``fabric.log`` writes to.
    """

    def __init__(
        self,
        accelerator: Any = None,
        strategy: Any = None,
        devices: Any = None,
        num_nodes: int = 1,
        precision: Any = 32,
        plugins: Any = None,
        callbacks: Any = None,
        loggers: Any = None,
    ) -> None:
        plan = resolve_plan(accelerator, strategy, devices, num_nodes, precision, plugins)
        self._plan = plan
        self._strategy = plan.strategy
        self._accelerator = plan.accelerator
        self._precision = plan.precision
        self._callbacks = _as_list(callbacks, "callbacks")
        self._loggers = _validate_loggers(loggers)
        self._environment_ready = False
        self._launched = False
        self._log_step = 0
        self._set_up_modules: weakref.WeakSet[Module] = weakref.WeakSet()  # ids could be reused
        self._set_up_optimizers: weakref.WeakSet[Optimizer] = weakref.WeakSet()
        # Nothing between the loss and autograd: fabric.backward can call tensor.backward directly.
        from fabric_core.plugins.strategy import Strategy

        self._plain_backward = (
            type(self._strategy).backward is Strategy.backward
            and self._precision.is_identity
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
    def strategy(self) -> Any:
        """The strategy this Fabric delegates to."""
        return self._strategy

    @property
    def accelerator(self) -> Any:
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

    # ------------------------------------------------------------------- launching
    def launch(self, function: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> Any:
        """Start the processes of the job.

        ``launch()`` continues in the current process as rank 0 (strategies that re-run the script
        for the other ranks, or jobs started by torchrun/SLURM). ``launch(fn, *args)`` runs
        ``fn(fabric, *args)`` in every process and returns rank 0's result.
        """
        if self._launched:
            raise RuntimeError("fabric.launch() was already called; call it once, at the start of your script.")
        if function is not None and not callable(function):
            raise TypeError(f"fabric.launch expects a function (or nothing), got {function!r}.")
        self._launched = True
        launcher = None if self._strategy.cluster_environment.creates_processes_externally else self._strategy.launcher
        if function is None:
            if launcher is not None and not launcher.continues_in_caller:
                raise MisconfigurationError(
                    f"strategy {self._strategy.name!r} starts new processes and needs the function to run in them: "
                    "fabric.launch(train) where train(fabric, ...) is your training function."
                )
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
        if launcher is not None and not self._strategy.cluster_environment.creates_processes_externally:
            raise RuntimeError(
                f"strategy {self._strategy.name!r} runs {self._strategy.world_size if self._launched else 'several'} "
                "processes: call fabric.launch() before setting anything up."
            )
        self._setup_environment()

    # ---------------------------------------------------------------------- set-up
    def setup(self, module: Module, *optimizers: Optimizer, scheduler: Any = None, move_to_device: bool = True) -> Any:
        """Set up a model and its optimizers; returns them wrapped, in the order given.

        A ``scheduler`` passed here is handed to strategies that drive it themselves and returned last.
        """
        self._ensure_environment()
        self._check_module(module)
        for optimizer in optimizers:
            self._check_optimizer(optimizer)
        original = unwrap_compiled(module)
        compiled = module if original is not module else None
        original = self._precision.convert_module(original)
        if move_to_device:
            self._strategy.module_to_device(original)
        forward_module, new_optimizers, scheduler = self._strategy.setup_module_and_optimizers(
            original, list(optimizers), scheduler
        )
        fabric_module = self._wrap_module(forward_module, original, compiled)
        wrapped = [self._wrap_optimizer(o) for o in new_optimizers]
        self._set_up_modules.add(original)
        outputs: list[Any] = [fabric_module, *wrapped]
        if scheduler is not None:
            outputs.append(scheduler)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def setup_module(self, module: Module, move_to_device: bool = True) -> _FabricModule:
        """Set up a model without optimizers (for inference, or before creating optimizers with FSDP)."""
        self._ensure_environment()
        self._check_module(module)
        original = unwrap_compiled(module)
        compiled = module if original is not module else None
        original = self._precision.convert_module(original)
        if move_to_device:
            self._strategy.module_to_device(original)
        forward_module = self._strategy.setup_module(original)
        self._set_up_modules.add(original)
        return self._wrap_module(forward_module, original, compiled)

    def setup_optimizers(self, *optimizers: Optimizer) -> Any:
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
            self._check_optimizer(optimizer)
        wrapped = [self._wrap_optimizer(self._strategy.setup_optimizer(o)) for o in optimizers]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def setup_dataloaders(
        self,
        *dataloaders: DataLoader,
        replace_sampler: bool = True,
        move_to_device: bool = True,
        use_distributed_sampler: bool | None = None,
    ) -> Any:
        """Set up dataloaders: a distributed sampler when several processes run, batches moved to the device.

        ``use_distributed_sampler`` is the newer name of ``replace_sampler``.
        """
        if not dataloaders:
            raise ValueError("setup_dataloaders needs at least one DataLoader.")
        self._ensure_environment()
        replace = replace_sampler if use_distributed_sampler is None else use_distributed_sampler
        from fabric_core.utilities.data import prepare_dataloader

        wrapped = []
        for loader in dataloaders:
            if isinstance(loader, _FabricDataLoader):
                raise ValueError("This dataloader was already set up; pass the original DataLoader only once.")
            if not isinstance(loader, DataLoader):
                raise TypeError(f"setup_dataloaders expects torch DataLoaders, got {type(loader).__name__}.")
            loader = prepare_dataloader(loader, self._strategy, replace_sampler=replace)
            device = self.device if move_to_device and self.device.type != "cpu" else None
            wrapped.append(_FabricDataLoader(loader, device=device, strategy=self._strategy))
        return wrapped[0] if len(wrapped) == 1 else wrapped

    def _wrap_module(self, forward_module: Module, original: Module, compiled: Module | None) -> _FabricModule:
        if compiled is not None:
            if forward_module is original:
                forward_module = compiled
            else:
                from torch._dynamo.eval_frame import OptimizedModule

                # Compile the strategy's wrapper with the user's own compile settings.
                forward_module = OptimizedModule(forward_module, compiled.dynamo_ctx)
        return _FabricModule(forward_module, self._strategy, original)

    def _wrap_optimizer(self, optimizer: Optimizer) -> _FabricOptimizer:
        self._set_up_optimizers.add(optimizer)
        if self._strategy.requires_fabric_backward():
            # Stepping the original optimizer would skip the scaler / engine: refuse it clearly.
            optimizer.register_step_pre_hook(functools.partial(_refuse_raw_step, self._strategy))
        return _FabricOptimizer(optimizer, self._strategy, self._callbacks)

    def _check_module(self, module: Any) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"fabric.setup expects a torch.nn.Module, got {type(module).__name__}.")
        if is_wrapped(module) or unwrap_compiled(module) in self._set_up_modules:
            raise ValueError("This module was already set up with fabric.setup; pass the original module only once.")

    def _check_optimizer(self, optimizer: Any) -> None:
        if isinstance(optimizer, _FabricOptimizer) or optimizer in self._set_up_optimizers:
            raise ValueError("This optimizer was already set up; pass the original optimizer only once.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"fabric.setup expects torch.optim.Optimizer instances after the module, got {type(optimizer).__name__}."
            )

    # -------------------------------------------------------------------- training
    def backward(self, tensor: Tensor, *args: Any, model: _FabricModule | None = None, **kwargs: Any) -> None:
        """Replaces ``loss.backward()``: runs through the precision plugin and the strategy."""
        if self._plain_backward:
            tensor.backward(*args, **kwargs)
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
                inner_module, inner_optimizer, max_norm, norm_type, error_if_nonfinite
            )
        self._strategy.clip_gradients_value(inner_module, inner_optimizer, cast(float, clip_val))
        return None

    def autocast(self) -> AbstractContextManager:
        """Run the enclosed operations in the chosen precision (the module's forward already does)."""
        return self._precision.forward_context()

    def to_device(self, obj: Any) -> Any:
        """Move a module, a tensor or a collection of tensors to this process's device."""
        if isinstance(obj, Module):
            self._strategy.module_to_device(obj)
            return obj
        return self._strategy.batch_to_device(obj)

    def no_backward_sync(self, module: _FabricModule, enabled: bool = True) -> AbstractContextManager:
        """Skip gradient synchronisation for the enclosed forward and backward (gradient accumulation)."""
        if not isinstance(module, _FabricModule):
            raise TypeError("no_backward_sync expects the module returned by fabric.setup.")
        if not enabled:
            return nullcontext()
        if not self._strategy.supports_no_backward_sync:
            if self._strategy.is_distributed and self.is_global_zero:
                warnings.warn(
                    f"strategy {self._strategy.name!r} cannot skip gradient synchronisation; no_backward_sync has no effect.",
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

    def all_gather(self, data: Any, group: Any = None, sync_grads: bool = False) -> Any:
        """Gather tensors (or collections of them) from all processes: each gets a leading world dimension."""
        self._ensure_environment()
        data = _numbers_to_tensors(data, self.device)
        return apply_to_tensors(data, lambda t: self._strategy.all_gather(t, group=group, sync_grads=sync_grads))

    def all_reduce(self, data: Any, group: Any = None, reduce_op: str = "mean") -> Any:
        """Reduce tensors (or collections of them) over all processes with ``sum``, ``mean``, ``max`` or ``min``."""
        if reduce_op not in _REDUCE_OPS:
            raise ValueError(f"reduce_op={reduce_op!r} is not supported; choose one of {', '.join(_REDUCE_OPS)}.")
        self._ensure_environment()
        data = _numbers_to_tensors(data, self.device)
        return apply_to_tensors(data, lambda t: self._strategy.all_reduce(t, group=group, reduce_op=reduce_op))

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
    def init_module(self, empty_init: bool | None = None) -> AbstractContextManager:
        """Create the module's parameters directly on the device, in the target dtype.

        ``empty_init=True`` skips random initialisation (for weights you load next); sharding
        strategies create the module on the meta device.
        """
        self._ensure_environment()
        return self._strategy.module_init_context(empty_init=empty_init)

    def init_tensor(self) -> AbstractContextManager:
        """Create tensors directly on the device, in the target dtype."""
        self._ensure_environment()
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(self._strategy.tensor_init_context())
        stack.enter_context(self._precision.tensor_init_context())
        return stack

    def sharded_model(self) -> AbstractContextManager:
        """Shard parameters as layers are created (the reference page's name for ``init_module``)."""
        return self.init_module()

    # ----------------------------------------------------------------- checkpoints
    def save(
        self, path: str | Path, state: dict[str, Any], filter: dict[str, Callable[[str, Any], bool]] | None = None
    ) -> None:
        """Save ``state`` (modules, optimizers, anything with ``state_dict``, plain values) to ``path``.

        The reference page's order ``save(content, filepath)`` is accepted too.
        """
        if isinstance(path, dict) and isinstance(state, (str, Path)):
            path, state = state, path
        self._ensure_environment()
        self._strategy.save_checkpoint(path, state, filter=filter)

    def load(
        self, path: str | Path, state: dict[str, Any] | None = None, strict: bool = True, weights_only: bool = True
    ) -> dict[str, Any]:
        """Load ``path``: restore into ``state`` in place and return what ``state`` did not ask for.

        Without ``state`` the whole checkpoint is returned. Loading executes no code from the file
        unless ``weights_only=False``.
        """
        self._ensure_environment()
        return self._strategy.load_checkpoint(path, state=state, strict=strict, weights_only=weights_only)

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
    def seed_everything(seed: int | None = None, workers: bool | None = None) -> int:
        """Seed Python, NumPy and torch; ``workers=True`` also seeds dataloader workers per rank."""
        return _seed.seed_everything(seed, workers)

    def call(self, hook_name: str, *args: Any, **kwargs: Any) -> None:
        """Call ``hook_name(*args, **kwargs)`` on every callback that defines it."""
        for callback in self._callbacks:
            method = getattr(callback, hook_name, None)
            if method is None:
                continue
            if not callable(method):
                raise TypeError(f"{type(callback).__name__}.{hook_name} is not callable.")
            method(*args, **kwargs)

    def log(self, name: str, value: Any, step: int | None = None) -> None:
        """Log a scalar to every logger (tensors are detached and turned into numbers)."""
        self.log_dict({name: value}, step=step)

    def log_dict(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several scalars at once; without ``step`` the step counts up by one per call."""
        if step is None:
            step = self._log_step
        self._log_step = step + 1
        if not self._loggers:
            return
        plain = {name: _to_number(name, value) for name, value in metrics.items()}
        for logger in self._loggers:
            logger.log_metrics(plain, step=step)

    # ------------- conveniences (accumulation, evaluation, profiling, progress)
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


def _as_list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _validate_loggers(loggers: Any) -> list[Logger]:
    items = _as_list(loggers, "loggers")
    for item in items:
        if not isinstance(item, Logger) and not callable(getattr(item, "log_metrics", None)):
            raise MisconfigurationError(
                f"loggers accepts Logger instances (for example fabric_loggers.TensorBoardLogger), got {item!r}."
            )
    return items


def _to_number(name: str, value: Any) -> Any:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"fabric.log({name!r}) got a tensor with {value.numel()} elements; log a scalar.")
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
