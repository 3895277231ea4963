"""SPMD over all devices (CPU_NUM_DEVICES=2): train, check shardings, save, load."""

from __future__ import annotations

import sys
import warnings

import torch
from fabric_core import Fabric
from xla_helpers import cpu_state, emit, make_data, train_fabric

if __name__ == "__main__":
    strategy, precision, n, checkpoint = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    import torch_xla

    fabric = Fabric(accelerator="tpu", strategy=strategy, precision=precision)
    fabric.launch()
    losses, model, optimizer, loader = train_fabric(fabric, n=n)
    x = next(iter(loader))[0]
    spec = torch_xla._XLAC._get_xla_sharding_spec
    result = {
        "strategy": fabric.strategy.name,
        "world_size": fabric.world_size,
        "num_batches": len(loader),
        "losses": losses,
        "state": {k: v.tolist() for k, v in cpu_state(model).items()},
        "input_sharding": spec(x),
        "weight_sharding": spec(model.module[0].weight),
        "weight_shape": list(model.module[0].weight.shape),
    }
    fabric.save(checkpoint, {"model": model, "optimizer": optimizer})
    saved = torch.load(checkpoint, weights_only=True)
    result["saved_shapes"] = {k: list(v.shape) for k, v in saved["model"].items()}
    inputs = make_data()[0].to(fabric.device)
    before = model(inputs).cpu()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    fabric.load(checkpoint, {"model": model, "optimizer": optimizer})
    result["weight_sharding_after_load"] = spec(model.module[0].weight)
    result["restored_exactly"] = bool(torch.equal(model(inputs).cpu(), before))
    result["all_reduce"] = fabric.all_reduce(torch.tensor(2.0)).item()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fabric.no_backward_sync(model):  # XLA compiles the gradient reduction in: nothing to skip
            pass
    result["no_sync_warning"] = [str(w.message) for w in caught]
    emit(result)
