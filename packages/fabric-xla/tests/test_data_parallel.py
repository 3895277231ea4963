"""Strategy "xla" (a replica per device) through fabric.launch(fn), for real with one replica on the CPU device.

Several replicas need collectives that hang on PyTorch/XLA's CPU device (pytorch/xla 5005, 9089):
those runs are in test_tpu.py; launching several replicas without collectives is in test_launcher.py.
"""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from xla_helpers import assert_close_states, cpu_state, requires_xla, train_fabric, train_reference

pytestmark = requires_xla()


def _train_and_talk(fabric):
    losses, model, _, _ = train_fabric(fabric)
    with fabric.no_backward_sync(model):  # gradients are reduced at the step: nothing to skip, no warning
        pass
    return {
        "losses": losses,
        "state": cpu_state(model),
        "rank": fabric.global_rank,
        "world": fabric.world_size,
        "device": str(fabric.device),
        "sum": fabric.all_reduce(torch.tensor(3.0), reduce_op="sum").item(),
        "max": fabric.all_reduce(torch.tensor([1.0, 5.0]), reduce_op="max").cpu().tolist(),
        "gathered": tuple(fabric.all_gather(torch.tensor([1.0, 2.0])).shape),
        "object": fabric.broadcast({"lr": 0.05}),
        "tensor": fabric.broadcast(torch.arange(3.0)).cpu().tolist(),
    }


def test_one_replica_trains_like_plain_torch_and_returns_rank_zero_result():
    fabric = Fabric(accelerator="tpu", strategy="xla", devices=1)
    result = fabric.launch(_train_and_talk)
    ref_losses, ref_state = train_reference()
    torch.testing.assert_close(torch.tensor(result["losses"]), torch.tensor(ref_losses), atol=1e-5, rtol=1e-4)
    assert_close_states(result["state"], ref_state)
    assert result["rank"] == 0 and result["world"] == 1 and result["device"].startswith("xla")
    assert result["sum"] == 3.0 and result["max"] == [1.0, 5.0]
    assert result["gathered"] == (1, 2)
    assert result["object"] == {"lr": 0.05} and result["tensor"] == [0.0, 1.0, 2.0]


def test_one_replica_can_continue_in_the_calling_process():
    fabric = Fabric(accelerator="tpu", strategy="xla", devices=1)
    fabric.launch()
    losses, _, _, _ = train_fabric(fabric, epochs=1)
    assert fabric.world_size == 1 and losses[-1] < losses[0]


def test_several_replicas_need_a_function_to_run():
    from fabric_core.errors import MisconfigurationError
    from fabric_xla import XLAStrategy

    fabric = Fabric(accelerator="tpu", strategy=XLAStrategy(allow_cpu_multiprocess=True), devices=2)
    with pytest.raises(MisconfigurationError, match=r"fabric\.launch\(train\)"):
        fabric.launch()
