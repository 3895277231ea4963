"""``DeepSpeedStrategy``: ZeRO data parallelism through DeepSpeed engines, on core's process groups."""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from fabric_core.errors import MisconfigurationError
from fabric_core.plugins.accelerator import Accelerator
from fabric_core.plugins.bases import ProcessGroupStrategy
from fabric_core.plugins.precision import Precision
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer

from fabric_deepspeed.availability import require_deepspeed
from fabric_deepspeed.config import build_config, load_config, offload_device, zero_stage
from fabric_deepspeed.engines import EngineRegistry
from fabric_deepspeed.optimizer_view import engine_optimizer_view, refuse_raw_step
from fabric_deepspeed.precision import DeepSpeedPrecision, check_supported

# Accelerator name in Fabric -> what DeepSpeed's accelerator reports as its device name.
_DS_DEVICE = {"cpu": "cpu", "cuda": "cuda"}


class DeepSpeedStrategy(ProcessGroupStrategy):
    """Trains with DeepSpeed's ZeRO: optimizer states (stage 1), gradients (2) and parameters (3) sharded.

    ``fabric.setup(model, optimizer)`` builds one DeepSpeed engine from the two; ``fabric.backward``
    and ``optimizer.step()`` run through it. The training loop keeps deciding when to step: several
    ``fabric.backward`` calls before one ``optimizer.step()`` accumulate gradients, as with DDP.

    Args:
        config: a DeepSpeed config dict or the path of a JSON file. The arguments below are written
            into it; an argument that contradicts the config is an error. Without a config, ZeRO stage 2.
        stage: ZeRO stage 0, 1, 2 or 3.
        offload_optimizer: keep optimizer states (and the step) on the CPU (``True``/``"cpu"``) or on
            NVMe (``"nvme"`` with ``nvme_path``). Stages 1-3.
        offload_parameters: keep parameters on the CPU or NVMe between uses. Stage 3 only.
        nvme_path, pin_memory: where NVMe offload writes; whether offloaded tensors use pinned memory.
        allgather_bucket_size, reduce_bucket_size: elements per communication bucket.
        contiguous_gradients, overlap_comm, sub_group_size: ZeRO tuning knobs, as in DeepSpeed's config.
        gradient_accumulation_steps: let DeepSpeed count micro-batches: call ``optimizer.step()`` after
            every ``fabric.backward`` and the engine steps every N-th time, dividing the loss by N.
            Leave it unset to accumulate the DDP way (several backwards, then one step).
        gradient_clipping: clip the global gradient norm inside the optimizer step (DeepSpeed's
            ``gradient_clipping``). ``fabric.clip_gradients(max_norm=...)`` must then ask for the same.
        logging_level: level of DeepSpeed's logger (default ``logging.WARNING``: quiet).
        start_method, process_group_backend, timeout: see core's ``ProcessGroupStrategy``.
    """

    name = "deepspeed"
    requires_joint_setup = True
    supported_accelerators = tuple(_DS_DEVICE)

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path | None = None,
        stage: int | None = None,
        offload_optimizer: bool | str | None = None,
        offload_parameters: bool | str | None = None,
        nvme_path: str | None = None,
        pin_memory: bool | None = None,
        allgather_bucket_size: int | None = None,
        reduce_bucket_size: int | None = None,
        contiguous_gradients: bool | None = None,
        overlap_comm: bool | None = None,
        sub_group_size: int | None = None,
        gradient_accumulation_steps: int | None = None,
        gradient_clipping: float | None = None,
        logging_level: int = logging.WARNING,
        start_method: str = "popen",
        process_group_backend: str | None = None,
        timeout: Any = None,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        checkpoint_io: Any = None,
        cluster_environment: Any = None,
        parallel_devices: list[torch.device] | None = None,
    ) -> None:
        require_deepspeed()
        super().__init__(
            start_method=start_method,
            process_group_backend=process_group_backend,
            timeout=timeout,
            accelerator=accelerator,
            precision=precision,
            checkpoint_io=checkpoint_io,
            cluster_environment=cluster_environment,
            parallel_devices=parallel_devices,
        )
        self.config: dict[str, Any] = build_config(
            load_config(config),
            stage=stage,
            offload_optimizer=offload_optimizer,
            offload_parameters=offload_parameters,
            nvme_path=nvme_path,
            pin_memory=pin_memory,
            allgather_bucket_size=allgather_bucket_size,
            reduce_bucket_size=reduce_bucket_size,
            contiguous_gradients=contiguous_gradients,
            overlap_comm=overlap_comm,
            sub_group_size=sub_group_size,
            gradient_accumulation_steps=gradient_accumulation_steps,
            gradient_clipping=gradient_clipping,
        )
        if isinstance(logging_level, bool) or not isinstance(logging_level, int):
            raise MisconfigurationError(
                f"logging_level must be a logging level such as logging.WARNING, got {logging_level!r}."
            )
        self.logging_level = logging_level
        self._engines = EngineRegistry()
        self._environment_changes: dict[str, str | None] = {}

    # ------------------------------------------------------------------ facts
    @property
    def zero_stage(self) -> int:
        """The ZeRO stage this strategy runs."""
        return zero_stage(self.config)

    @property
    def supports_no_backward_sync(self) -> bool:  # type: ignore[override]
        # Stages 0/1 reduce gradients only in optimizer.step(), so backward never communicates; stages
        # 2/3 reduce-scatter in every backward (that is how they shard gradients) and cannot skip it.
        return self.zero_stage <= 1

    def requires_fabric_backward(self) -> bool:
        """``False``: a plain ``loss.backward()`` is never silently wrong under DeepSpeed (>= 0.19.8).

        The engine hooks the outputs of its forward: under ZeRO a plain backward runs the engine's
        prologue and epilogue (the same gradients as ``fabric.backward``), and where it cannot
        (stage 0, loss scaling) the engine raises. So the module wrapper adds no guard of its own to
        every step; stepping the user's original optimizer is still refused (``refuse_raw_step``).
        """
        return False

    @property
    def engines(self) -> list[Any]:
        """The DeepSpeed engines built by ``fabric.setup``, in order."""
        return self._engines.engines

    # -------------------------------------------------------------- precision
    def create_precision(self, name: str, accelerator: Accelerator) -> Precision | None:
        check_supported(name, accelerator.name)
        precision = DeepSpeedPrecision(name)
        precision.configure(copy.deepcopy(self.config))  # refuses a contradicting config now, before any process starts
        return precision

    def validate(self) -> None:
        """Final checks once plan resolution filled in accelerator and precision (still before spawning)."""
        if not isinstance(self.precision, DeepSpeedPrecision):
            raise MisconfigurationError(
                f"The DeepSpeed strategies cast the model inside the engine and need their own precision; got "
                f"{self.precision!r} through plugins. Pass the name instead: Fabric(precision={self.precision.name!r})."
            )
        if self.accelerator is not None:
            check_supported(self.precision.name, self.accelerator.name)
        super().validate()

    def configure_launcher(self) -> None:
        assert isinstance(self.precision, DeepSpeedPrecision)  # validate() ran first
        self.precision.configure(self.config)
        super().configure_launcher()

    # --------------------------------------------------------------- lifecycle
    def setup_environment(self) -> None:
        from fabric_deepspeed.extension_locks import watch_extension_locks

        self._export_environment()
        with watch_extension_locks():  # DeepSpeed may compile ops from here on; a dead builder's lock is cleared
            super().setup_environment()
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        expected = _DS_DEVICE.get(self.root_device.type, self.root_device.type)
        found = get_accelerator().device_name()
        if found != expected:
            raise MisconfigurationError(
                f"DeepSpeed selected its {found!r} accelerator, but Fabric runs on {self.root_device.type!r}. Set "
                f"DS_ACCELERATOR={expected} before DeepSpeed is first imported, or pick accelerator={found!r}."
            )
        logging.getLogger("DeepSpeed").setLevel(self.logging_level)
        # The process group exists already (core made it, with the launcher's store): DeepSpeed detects
        # it and only wraps it, so ports and timeouts stay Fabric's.
        deepspeed.init_distributed(dist_backend=self.process_group_backend, timeout=self.timeout)

    def _export_environment(self) -> None:
        """Variables DeepSpeed reads from the environment (its engine asserts LOCAL_RANK)."""
        wanted = {
            "LOCAL_RANK": str(self.local_rank),
            "RANK": str(self.global_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.num_processes),
        }
        if self.root_device.type == "cpu" and "DS_ACCELERATOR" not in os.environ:
            wanted["DS_ACCELERATOR"] = "cpu"
        for key, value in wanted.items():
            if os.environ.get(key) != value:
                self._environment_changes.setdefault(key, os.environ.get(key))
                os.environ[key] = value

    def teardown(self) -> None:
        self._engines.destroy_all()
        super().teardown()
        for key, previous in self._environment_changes.items():
            if previous is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = previous
        self._environment_changes.clear()

    # ------------------------------------------------------------------ set-up
    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer], scheduler: Any = None
    ) -> tuple[Module, list[Optimizer], Any]:
        if len(optimizers) > 1:
            raise ValueError(
                f"A DeepSpeed engine takes one optimizer, but {len(optimizers)} were passed. Combine the parameter "
                "groups into one optimizer, or set up each model with its own: fabric.setup(model_a, opt_a), "
                "fabric.setup(model_b, opt_b)."
            )
        optimizer = optimizers[0] if optimizers else None
        if scheduler is not None and optimizer is None:
            raise ValueError(
                "A scheduler was passed to fabric.setup without an optimizer; DeepSpeed steps it with the optimizer."
            )
        engine = self._initialize_engine(module, optimizer, scheduler)
        if optimizer is None:
            return engine, [], scheduler
        return engine, [self._engines.record_of(engine).optimizer], scheduler

    def setup_module(self, module: Module) -> Module:
        """An engine without optimizer: forward only (inference, or a frozen teacher)."""
        return self._initialize_engine(module, None, None)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        raise RuntimeError(
            "DeepSpeed sets up model and optimizer together: use model, optimizer = fabric.setup(model, optimizer)."
        )

    def _initialize_engine(self, module: Module, optimizer: Optimizer | None, scheduler: Any) -> Any:
        import deepspeed

        from fabric_deepspeed.extension_locks import watch_extension_locks

        config = copy.deepcopy(self.config)
        with watch_extension_locks():
            engine, _, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizer, lr_scheduler=scheduler, config=config, dist_init_required=False
            )
        view = None
        if optimizer is not None:
            view = engine_optimizer_view(optimizer, engine)
            optimizer.register_step_pre_hook(functools.partial(refuse_raw_step, engine, self.name))
        self._engines.add(engine, view, optimizer, scheduler)
        return engine

    def module_to_device(self, module: Module) -> None:
        if _is_partitioned(module):
            return  # ZeRO-3 parameters already live where DeepSpeed put them (device, or CPU when offloaded)
        module.to(self.root_device)

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager:
        """Under stage 3, modules are created already partitioned across the processes (``deepspeed.zero.Init``)."""
        if self.zero_stage != 3:
            return super().module_init_context(empty_init)
        import deepspeed
        from fabric_core.plugins.tensors import skip_parameter_init

        stack = ExitStack()
        if empty_init:
            stack.enter_context(skip_parameter_init())
        stack.enter_context(self.precision.module_init_context())
        stack.enter_context(deepspeed.zero.Init(config_dict_or_path=self.config))
        return stack

    # ---------------------------------------------------------------- training
    def backward(self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any) -> None:
        trainable = self._engines.trainable
        engine = trainable[0] if module is None and len(trainable) == 1 else self._engines.for_backward(module)
        engine.backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        if kwargs.get("closure") is not None:
            raise ValueError("DeepSpeed's optimizer step takes no closure; call optimizer.step() without arguments.")
        # The view fabric.setup returned knows its engine; anything else is looked up.
        engine = getattr(type(optimizer), "_fabric_engine", None)
        if engine is None:
            engine = self._engines.for_optimizer(optimizer)
        engine.step()
        return None

    def no_backward_sync(self, module: Module, enabled: bool) -> AbstractContextManager:
        return nullcontext()  # stages 0/1 already defer the reduction to optimizer.step()

    def accumulation_step(
        self, module: Module, steps: int, window: int, boundary: bool
    ) -> AbstractContextManager[tuple[float, bool]] | None:
        """``fabric.accumulate`` on an engine that counts micro-batches itself (``gradient_accumulation_steps`` > 1).

        The engine divides each loss by its own count and steps on its boundary, which is set here for
        every micro-step (so a short last window ends on time); ``optimizer.step()`` is left to the
        engine. Without that setting (the default) the training loop owns the boundary and
        ``fabric.accumulate`` works as for DDP: ``None``.
        """
        engine = self._engines.find_for_module(module)
        if engine is None or not engine.managed_gradient_accumulation():
            return None
        configured = int(engine.gradient_accumulation_steps())
        if configured == 1:
            return None
        if steps != configured:
            raise MisconfigurationError(
                f"fabric.accumulate(model, steps={steps}) but this DeepSpeed engine was set up with "
                f"gradient_accumulation_steps={configured}, which it keeps for its life. Use steps={configured}, or "
                "create the strategy without gradient_accumulation_steps so fabric.accumulate decides the windows."
            )
        return _engine_window(engine, configured, window, boundary)

    def clip_gradients_norm(  # type: ignore[override]  # the engine clips in its step: None, no norm
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor | None:
        """DeepSpeed clips inside its optimizer step; this checks that the engine is set to clip the same way.

        Returns ``None``: the norm exists only once the step has reduced the gradients
        (``engine.get_global_grad_norm()`` afterwards).
        """
        engine = self._engines.for_optimizer(optimizer)
        configured = float(engine.gradient_clipping() or 0.0)
        if float(norm_type) != 2.0:
            raise MisconfigurationError(
                f"DeepSpeed clips the L2 norm of the gradients; norm_type={norm_type} is not supported."
            )
        if configured > 0 and abs(configured - float(max_norm)) <= 1e-12 * max(1.0, configured):
            return None
        setting = f"it is set to clip at {configured}" if configured > 0 else "clipping is off"
        raise MisconfigurationError(
            f"DeepSpeed clips gradients inside optimizer.step() with its own 'gradient_clipping' setting, and {setting}. "
            f"To clip at max_norm={max_norm}, create the strategy with DeepSpeedStrategy(gradient_clipping={max_norm}, ...) "
            "(or 'gradient_clipping' in the config); fabric.clip_gradients then just confirms it."
        )

    def clip_gradients_value(self, module: Module, optimizer: Optimizer, clip_val: float) -> None:
        raise MisconfigurationError(
            "DeepSpeed clips gradients only by their global norm (its 'gradient_clipping' setting); clipping by value is "
            "not supported. Use DeepSpeedStrategy(gradient_clipping=...) and fabric.clip_gradients(max_norm=...)."
        )

    # -------------------------------------------------------------- checkpoints
    def get_optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """This process's shard of the optimizer state (DeepSpeed's own format); ``fabric.save`` writes all shards."""
        engine = self._engines.find_for_optimizer(optimizer)
        return engine.optimizer.state_dict() if engine is not None else optimizer.state_dict()

    def load_optimizer_state(self, optimizer: Optimizer, state_dict: Mapping[str, Any]) -> None:
        if self._engines.find_for_optimizer(optimizer) is not None:
            raise RuntimeError(
                "Under DeepSpeed the optimizer state is sharded across processes; restore it with "
                "fabric.load(path, {'model': model, 'optimizer': optimizer}) from a checkpoint written by fabric.save."
            )
        optimizer.load_state_dict(state_dict)  # type: ignore[arg-type]

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        async_: bool = False,
    ) -> Any:
        """A state holding a DeepSpeed model is written as a DeepSpeed checkpoint folder (every rank writes its shard).

        ``path`` may be a local folder or an fsspec URL (staged in a local folder, then uploaded).
        """
        from fabric_deepspeed.checkpointing import save_deepspeed_checkpoint

        if self._engines.engines_in_state(state):
            if async_:
                raise ValueError(
                    "async_=True is not available for DeepSpeed checkpoint folders: DeepSpeed writes them itself, "
                    "synchronously (its decoupled checkpoint engine needs the async_io op and a writer process, and "
                    "gives no completion handle). Drop async_ for states that hold a DeepSpeed model; background "
                    "saves work for single-file, FSDP and ModelParallel checkpoints."
                )
            save_deepspeed_checkpoint(self, path, state, storage_options, filter)
            return None
        extra = {"async_": True} if async_ else {}
        return super().save_checkpoint(path, state, storage_options=storage_options, filter=filter, **extra)

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | Any = None,
        strict: bool = True,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        from fabric_core.plugins.checkpoint_io import load_options

        from fabric_deepspeed.checkpointing import holds_deepspeed_checkpoint, load_deepspeed_checkpoint

        if holds_deepspeed_checkpoint(self, path, storage_options):
            return load_deepspeed_checkpoint(
                self,
                path,
                state,
                strict=strict,
                weights_only=weights_only,
                verify=verify,
                storage_options=storage_options,
            )
        if isinstance(state, dict) and self._engines.engines_in_state(state):
            raise MisconfigurationError(
                f"{str(path)!r} is not a DeepSpeed checkpoint folder (no 'latest' file inside), so it cannot be loaded into a "
                "DeepSpeed model. Load plain weights into the model before fabric.setup, or turn a DeepSpeed checkpoint "
                "into one file with fabric_deepspeed.convert_zero_checkpoint_to_fp32_state_dict."
            )
        return super().load_checkpoint(
            path, state=state, strict=strict, weights_only=weights_only, **load_options(verify, storage_options)
        )

    def __repr__(self) -> str:
        offload = [s for s in ("offload_optimizer", "offload_param") if offload_device(self.config, s)]
        return (
            f"{type(self).__name__}(stage={self.zero_stage}, offload={offload or None}, precision={self.precision!r})"
        )


def _is_partitioned(module: Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


@contextmanager
def _engine_window(engine: Any, configured: int, window: int, boundary: bool) -> Iterator[tuple[float, bool]]:
    """One micro-step of an engine-counted window: its boundary set by us, the loss rescaled to ``1/window``."""
    engine.set_gradient_accumulation_boundary(boundary)
    try:
        yield configured / window, False  # the engine divides by ``configured``; its step() skips non-boundaries
    finally:
        engine._is_gradient_accumulation_boundary = None  # back to the engine's own counter outside the context
