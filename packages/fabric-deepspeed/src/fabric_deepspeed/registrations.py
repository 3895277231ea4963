"""Zero-argument factories registered under ``fabric_core.strategies`` for the named DeepSpeed variants."""

from __future__ import annotations

from fabric_core.plugins.strategy import Strategy


def _named(name: str, **kwargs: object) -> Strategy:
    from fabric_deepspeed.strategy import DeepSpeedStrategy

    strategy = DeepSpeedStrategy(**kwargs)  # type: ignore[arg-type]
    strategy.name = name  # type: ignore[misc]
    return strategy


def deepspeed() -> Strategy:
    """ZeRO stage 2 (DeepSpeed's usual choice): optimizer states and gradients sharded."""
    return _named("deepspeed", stage=2)


def deepspeed_stage_1() -> Strategy:
    """Optimizer states sharded across processes."""
    return _named("deepspeed_stage_1", stage=1)


def deepspeed_stage_1_offload() -> Strategy:
    """Stage 1 with optimizer states and the optimizer step on the CPU."""
    return _named("deepspeed_stage_1_offload", stage=1, offload_optimizer=True)


def deepspeed_stage_2() -> Strategy:
    """Optimizer states and gradients sharded."""
    return _named("deepspeed_stage_2", stage=2)


def deepspeed_stage_2_offload() -> Strategy:
    """Stage 2 with optimizer states and the optimizer step on the CPU."""
    return _named("deepspeed_stage_2_offload", stage=2, offload_optimizer=True)


def deepspeed_stage_3() -> Strategy:
    """Parameters, gradients and optimizer states sharded."""
    return _named("deepspeed_stage_3", stage=3)


def deepspeed_stage_3_offload() -> Strategy:
    """Stage 3 with parameters and optimizer states kept on the CPU."""
    return _named("deepspeed_stage_3_offload", stage=3, offload_optimizer=True, offload_parameters=True)


def deepspeed_stage_3_offload_nvme() -> Strategy:
    """Stage 3 with parameters and optimizer states offloaded to NVMe under ``/local_nvme`` (Lightning's default).

    For another folder use ``DeepSpeedStrategy(stage=3, offload_optimizer="nvme", offload_parameters="nvme",
    nvme_path=...)``. DeepSpeed's asynchronous I/O op (libaio) must be available.
    """
    return _named(
        "deepspeed_stage_3_offload_nvme",
        stage=3,
        offload_optimizer="nvme",
        offload_parameters="nvme",
        nvme_path="/local_nvme",
    )
