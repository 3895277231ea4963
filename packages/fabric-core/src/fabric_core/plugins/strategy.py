"""The Strategy interface: how a model is replicated or sharded and how processes cooperate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from fabric_core.plugins.precision import Precision

if TYPE_CHECKING:
    from concurrent.futures import Future

    import torch
    from torch import Tensor
    from torch.nn import Module
    from torch.optim import Optimizer

    from fabric_core.plugins.accelerator import Accelerator
    from fabric_core.plugins.checkpoint_io import CheckpointIO
    from fabric_core.plugins.environment import ClusterEnvironment
    from fabric_core.plugins.launcher import Launcher


class Strategy(ABC):
    """Places the model, runs backward and optimizer steps, and implements collectives.

    The ``Fabric`` facade never checks which strategy it holds; it asks these capability
    attributes instead. Contract for backend authors:

    - ``name`` is the registry name; ``is_distributed`` says whether more than one process may
      take part.
    - ``requires_joint_setup``: ``True`` when module and optimizers must be set up together in one
      call (DeepSpeed builds one engine from both); ``setup_module`` alone then works only for
      inference and ``setup_optimizer`` raises.
    - ``supports_no_backward_sync``: whether ``no_backward_sync`` really skips gradient
      communication; when ``False`` Fabric warns and runs normally. It may be an instance property
      where it depends on the configuration (a ZeRO stage).
    - ``accelerator``, ``precision``, ``checkpoint_io``, ``cluster_environment`` and
      ``parallel_devices`` are filled in by plan resolution before ``setup_environment``.
    - Collectives take and return tensors on ``root_device``.
    """

    name: ClassVar[str] = ""
    is_distributed: ClassVar[bool] = False
    requires_joint_setup: ClassVar[bool] = False
    supports_no_backward_sync: ClassVar[bool] = False
    #: ``True`` when one process drives every device (SPMD): several devices, yet one process.
    one_process_drives_all_devices: ClassVar[bool] = False
    #: ``True`` when the wrapper built in ``setup_module`` holds the parameters itself (XLA FSDP):
    #: parameters are then read through the wrapper, state dicts saved and loaded through the strategy.
    wrapper_owns_parameters: ClassVar[bool] = False
    #: accelerator names this strategy can run on; ``None`` means any.
    supported_accelerators: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        checkpoint_io: CheckpointIO | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        parallel_devices: list[torch.device] | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.precision: Precision = precision if precision is not None else Precision()
        self._checkpoint_io = checkpoint_io
        self.cluster_environment = cluster_environment
        self.parallel_devices = parallel_devices
        self.num_nodes = 1
        self._launcher: Launcher | None = None
        #: set by ``Fabric.backward`` and the optimizer wrapper while they run, to detect misuse
        self.in_fabric_backward = False
        self.in_fabric_step = False

    # ----------------------------------------------------------------- topology
    @property
    @abstractmethod
    def root_device(self) -> torch.device:
        """The device this process computes on."""

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def launcher(self) -> Launcher | None:
        """The launcher that starts the other processes, or ``None`` when nothing must be started."""
        return self._launcher

    def requires_fabric_backward(self) -> bool:
        """Whether backward and the optimizer step must go through Fabric (engines, gradient scalers)."""
        return self.precision.requires_fabric_backward

    @property
    def checkpoint_io(self) -> CheckpointIO:
        if self._checkpoint_io is None:
            from fabric_core.checkpoint.torch_io import TorchCheckpointIO

            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        self._checkpoint_io = io

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """``num_replicas``/``rank`` for a ``DistributedSampler``, or ``None`` when not sharding data."""
        return None

    def create_precision(self, name: str, accelerator: Accelerator) -> Precision | None:
        """A strategy-specific implementation of precision ``name`` (DeepSpeed's engine casts itself).

        ``None`` lets the accelerator, then the registry, provide it.
        """
        return None

    def validate(self) -> None:
        """Refuse an impossible configuration with a clear error, before any process is started.

        Called once by plan resolution after ``accelerator``, ``precision``, ``cluster_environment``,
        ``parallel_devices`` and ``num_nodes`` were filled in, and before ``configure_launcher``.
        Raise ``fabric_core.errors.MisconfigurationError`` naming the valid choices.
        """

    def configure_launcher(self) -> None:
        """Choose ``self._launcher`` from the cluster environment (called once by plan resolution, after ``validate``)."""

    # ---------------------------------------------------------------- lifecycle
    def setup_environment(self) -> None:
        """Prepare this process: select its device, join the process group."""
        assert self.accelerator is not None
        self.accelerator.setup_device(self.root_device)

    def teardown(self) -> None:
        """Leave the process group and release devices."""
        self.precision.teardown()
        if self.accelerator is not None:
            self.accelerator.teardown()
        self.checkpoint_io.teardown()

    # ------------------------------------------------------------------- set-up
    def setup_module_and_optimizers(
        self, module: Module, optimizers: list[Optimizer], scheduler: Any = None
    ) -> tuple[Module, list[Optimizer], Any]:
        """Set up a module and its optimizers together (strategies that need both override this)."""
        module = self.setup_module(module)
        return module, [self.setup_optimizer(o) for o in optimizers], scheduler

    def setup_module(self, module: Module) -> Module:
        """Wrap ``module`` for this strategy (DDP, sharding). Returns what forward should call."""
        return module

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Prepare ``optimizer`` (sharded optimizers replace it)."""
        return optimizer

    def module_to_device(self, module: Module) -> None:
        """Move ``module`` to ``root_device``."""
        module.to(self.root_device)

    def module_init_context(self, empty_init: bool | None = None) -> AbstractContextManager[object]:
        """Context under which new modules get created on the device, in the target dtype."""
        stack = ExitStack()
        if empty_init:
            import torch.nn.utils  # noqa: F401  (lazy: keeps import fabric_core cheap)

            from fabric_core.utilities.init import skip_parameter_init

            stack.enter_context(skip_parameter_init())
        stack.enter_context(self.tensor_init_context())
        stack.enter_context(self.precision.module_init_context())
        return stack

    def tensor_init_context(self) -> AbstractContextManager[object]:
        """Context under which new tensors get created on ``root_device``."""
        return self.root_device

    def process_dataloader(self, dataloader: Any, device: torch.device | None) -> Any:
        """An iterable replacing ``dataloader`` that yields batches already on ``device`` (XLA's
        background loader), or ``None`` to move each batch with ``batch_to_device``."""
        return None

    def batch_to_device(self, batch: Any, device: torch.device | None = None) -> Any:
        """Move every tensor in ``batch`` to ``device`` (default: ``root_device``)."""
        from fabric_core.utilities.apply_func import move_to_device

        return move_to_device(batch, device or self.root_device)

    # ------------------------------------------------------------------ training
    def backward(self, tensor: Tensor, module: Module | None, *args: Any, **kwargs: Any) -> None:
        """Back-propagate ``tensor`` through the precision plugin."""
        tensor = self.precision.pre_backward(tensor, module)
        self.precision.backward(tensor, module, *args, **kwargs)
        self.precision.post_backward(tensor, module)

    def optimizer_step(self, optimizer: Optimizer, **kwargs: Any) -> Any:
        """Step ``optimizer`` through the precision plugin."""
        return self.precision.optimizer_step(optimizer, **kwargs)

    def no_backward_sync(self, module: Module, enabled: bool) -> AbstractContextManager[None]:
        """Skip gradient synchronisation for ``module`` while the context is open."""
        return nullcontext()

    def clip_gradients_norm(
        self,
        module: Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> Tensor:
        """Clip the gradients of ``optimizer``'s parameters to ``max_norm``; returns the total norm."""
        import torch

        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(
            params, max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite
        )

    def clip_gradients_value(self, module: Module, optimizer: Optimizer, clip_val: float) -> None:
        """Clamp every gradient of ``optimizer``'s parameters to ``[-clip_val, clip_val]``."""
        import torch

        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_value_(params, clip_val)

    # --------------------------------------------------------------- collectives
    def all_reduce(self, tensor: Tensor, group: Any = None, reduce_op: str = "mean") -> Tensor:
        """Reduce ``tensor`` over all processes (``sum``/``mean``/``max``/``min``)."""
        return tensor

    def all_gather(self, tensor: Tensor, group: Any = None, sync_grads: bool = False) -> Tensor:
        """Stack ``tensor`` from all processes along a new leading dimension.

        A single-process strategy returns ``tensor`` unchanged, without that dimension (as Lightning does).
        """
        return tensor

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Send ``obj`` from rank ``src`` to every process."""
        return obj

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""

    # -------------------------------------------------------------- checkpoints
    def get_module_state_dict(self, module: Module) -> dict[str, Any]:
        """The full state dict of ``module`` (unwrapped, unprefixed keys)."""
        return module.state_dict()

    def load_module_state_dict(self, module: Module, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load ``state_dict`` into ``module``."""
        module.load_state_dict(state_dict, strict=strict)

    def get_optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The state dict of ``optimizer``."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: Optimizer, state_dict: Mapping[str, Any]) -> None:
        optimizer.load_state_dict(state_dict)  # type: ignore[arg-type]

    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
        async_: bool = False,
    ) -> Future[None] | None:
        """Convert ``state`` to plain data and write it from global rank 0 (in the background with ``async_``)."""
        from fabric_core.checkpoint.state import convert_state_for_saving

        return self._write_from_rank_zero(convert_state_for_saving(self, state, filter), path, storage_options, async_)

    def _write_from_rank_zero(
        self, converted: dict[str, Any], path: str | Path, storage_options: Any, async_: bool
    ) -> Future[None] | None:
        """Write already converted state as one file from global rank 0: in the background with
        ``async_`` (every rank returns a future), else synchronously followed by a barrier."""
        if async_:
            from fabric_core.checkpoint.async_save import finished

            if self.is_global_zero:
                return self.checkpoint_io.save_checkpoint_async(converted, path, storage_options=storage_options)
            return finished()
        if self.is_global_zero:
            # Keywords, as Lightning calls CheckpointIO plugins (a user's plugin may take them in any order).
            self.checkpoint_io.save_checkpoint(checkpoint=converted, path=path, storage_options=storage_options)
        self.barrier("save_checkpoint")
        return None

    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | Any = None,
        strict: bool = True,
        weights_only: bool = True,
        verify: bool = True,
        storage_options: Any = None,
    ) -> dict[str, Any]:
        """Read ``path`` (checksums verified unless ``verify=False``) and restore it into ``state``."""
        from fabric_core.checkpoint.state import restore_state
        from fabric_core.plugins.checkpoint_io import load_options

        self.barrier("load_checkpoint")
        checkpoint = self.checkpoint_io.load_checkpoint(
            path, map_location="cpu", weights_only=weights_only, **load_options(verify, storage_options)
        )
        return restore_state(self, checkpoint, state, strict=strict, path=path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(accelerator={self.accelerator!r}, precision={self.precision!r})"
