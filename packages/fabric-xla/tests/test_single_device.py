"""One XLA device, for real on PyTorch/XLA's CPU device: training, precisions, checkpoints."""

from __future__ import annotations

import pytest
import torch
from fabric_core import Fabric
from xla_helpers import (
    assert_close_states,
    cpu_state,
    make_model,
    requires_xla,
    train_fabric,
    train_reference,
)

pytestmark = requires_xla()


def test_training_matches_plain_torch_on_cpu(fabric):
    assert fabric.strategy.name == "single_xla"
    losses, model, _, _ = train_fabric(fabric)
    ref_losses, ref_state = train_reference()
    assert losses[-1] < 0.25 * losses[0]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=1e-5, rtol=1e-4)
    assert_close_states(cpu_state(model), ref_state)


def test_batches_and_parameters_live_on_the_xla_device(fabric):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # created before set-up, on the CPU tensors
    model, optimizer = fabric.setup(model, optimizer)
    params = list(model.parameters())
    assert all(p.device.type == "xla" for p in params)
    # Moving to XLA replaces the Parameter objects; the optimizer must follow them.
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in params]
    x, _ = next(iter(fabric.setup_dataloaders(torch.utils.data.DataLoader(torch.randn(4, 6), batch_size=4)))), None
    assert x.device.type == "xla"


def test_init_module_creates_parameters_on_the_device(fabric):
    with fabric.init_module():
        model = torch.nn.Linear(3, 3)
    assert model.weight.device.type == "xla"
    with fabric.init_tensor():
        assert torch.empty(2).device.type == "xla"


@pytest.mark.parametrize(("precision", "param_dtype"), [("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16)])
def test_bfloat16_precisions_train(precision, param_dtype):
    fabric = Fabric(accelerator="tpu", devices=1, precision=precision)
    fabric.launch()
    activations = []
    losses, model, _, _ = train_fabric(fabric, epochs=2)
    model.module[0].register_forward_hook(lambda m, i, o: activations.append(o.dtype))
    out = model(torch.randn(2, 6, device=fabric.device))
    assert activations == [torch.bfloat16]  # the layer computes in bfloat16
    assert out.dtype == torch.float32  # users get outputs in the default dtype
    assert next(model.parameters()).dtype == param_dtype
    ref_losses, _ = train_reference(epochs=2)
    assert losses[-1] < 0.3 * losses[0]
    # bfloat16 keeps ~3 significant digits: the run follows the float32 one loosely.
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(ref_losses), atol=0.05, rtol=0.1)


def test_checkpoint_is_written_from_host_tensors_and_restores(fabric, tmp_path):
    _, model, optimizer, _ = train_fabric(fabric, epochs=1)
    path = tmp_path / "ckpt.pt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "step": 6})
    raw = torch.load(path, weights_only=True)
    assert all(t.device.type == "cpu" for t in raw["model"].values())
    momentum = raw["optimizer"]["state"][0]["momentum_buffer"]
    assert momentum.device.type == "cpu"

    fresh = make_model(seed=5)
    fresh_model, fresh_optimizer = fabric.setup(fresh, torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9))
    remainder = fabric.load(path, {"model": fresh_model, "optimizer": fresh_optimizer})
    assert remainder == {"step": 6}
    assert_close_states(cpu_state(fresh_model), cpu_state(model), atol=0, rtol=0)
    restored = fresh_optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert restored.device.type == "xla"  # state follows the parameters onto the device
    torch.testing.assert_close(restored.cpu(), momentum, atol=0, rtol=0)


def test_collectives_on_one_device_are_identities(fabric):
    assert fabric.all_reduce(3.0, reduce_op="sum").item() == 3.0
    gathered = fabric.all_gather(torch.tensor([1.0, 2.0]))
    assert gathered.shape == (2,)  # one process: returned unchanged, as in Lightning
    assert fabric.broadcast({"a": 1}) == {"a": 1}
    fabric.barrier()


def test_clip_gradients_returns_the_norm(fabric):
    model = make_model()
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    loss = model(torch.randn(4, 6, device=fabric.device)).pow(2).sum() * 100
    fabric.backward(loss)
    norm = fabric.clip_gradients(model, optimizer, max_norm=0.5)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() > 0.5
    assert clipped.item() == pytest.approx(0.5, rel=1e-3)


def test_checkpoints_in_the_background_and_through_fsspec_urls(fabric, tmp_path):
    _, model, _, _ = train_fabric(fabric, epochs=1)
    expected = cpu_state(model)
    future = fabric.save(tmp_path / "bg.pt", {"model": model, "step": 1}, async_=True)
    future.result()  # written from the host copy taken when save returned
    fabric.save("memory://bucket/xla.pt", {"model": model, "step": 2})
    for source, step in ((tmp_path / "bg.pt", 1), ("memory://bucket/xla.pt", 2)):
        fresh = make_model(seed=5)
        fresh_model = fabric.setup(fresh)
        assert fabric.load(source, {"model": fresh_model}) == {"step": step}
        assert_close_states(cpu_state(fresh_model), expected, atol=0, rtol=0)


def test_a_damaged_checkpoint_is_refused_unless_verify_is_off(fabric, tmp_path):
    from fabric_core.plugins.checkpointing import CheckpointError

    _, model, _, _ = train_fabric(fabric, epochs=1)
    path = tmp_path / "ckpt.pt"
    fabric.save(path, {"model": model})
    data = bytearray(path.read_bytes())
    weight = torch.load(path, weights_only=True)["model"]["0.weight"].numpy().tobytes()
    data[data.find(weight) + 5] ^= 0xFF  # inside a tensor's bytes: torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        fabric.load(path, {"model": model})
    fabric.load(path, {"model": model}, verify=False)
