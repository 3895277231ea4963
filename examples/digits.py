"""Train a small image classifier on scikit-learn's bundled 8x8 digits (no download) with Fabric.

python examples/digits.py                          # one process (--logger tensorboard|csv|mlflow)
fabric run --devices 2 examples/digits.py          # two processes (DDP over gloo on CPU)
torchrun --nproc-per-node 2 examples/digits.py     # the same script under torchrun
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import torch
from fabric_core import Fabric
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_data(seed: int) -> tuple[TensorDataset, TensorDataset]:
    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images / 16.0, labels, test_size=0.25, random_state=seed, stratify=labels
    )
    as_set = lambda x, y: TensorDataset(torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y))  # noqa: E731
    return as_set(x_train, y_train), as_set(x_test, y_test)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def batches(fabric: Fabric, loader: Iterable, desc: str) -> Iterable:
    """A progress bar (rank zero) when a person watches a terminal; in a log, the one summary line per epoch suffices."""
    return fabric.progress(loader, desc=desc, leave=False) if sys.stderr.isatty() else loader


def main() -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--logger", choices=["none", "tensorboard", "csv", "mlflow"], default="none")
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--checkpoint", default=None, help="save the final state here")
    args = parser.parse_args()

    loggers = []
    if args.logger == "mlflow":
        # pip install "fabric-core[mlflow]"; then: mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
        from fabric_loggers import MLflowLogger

        loggers.append(MLflowLogger(experiment_name="digits", save_dir="mlruns"))
    elif args.logger != "none":
        from fabric_loggers import CSVLogger, TensorBoardLogger  # pip install "fabric-core[loggers]"

        loggers.append((TensorBoardLogger if args.logger == "tensorboard" else CSVLogger)(args.log_dir, name="digits"))

    fabric = Fabric(
        accelerator=args.accelerator,
        strategy=args.strategy,
        devices=args.devices,
        precision=args.precision,
        loggers=loggers,
    )
    fabric.launch()
    fabric.seed_everything(args.seed)
    for logger in fabric.loggers:
        logger.log_hyperparams(vars(args))

    train_set, test_set = make_data(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    model, optimizer = fabric.setup(model, optimizer)
    train_loader, test_loader = fabric.setup_dataloaders(train_loader, test_loader)
    fabric.print(f"Training on {fabric.world_size} process(es), {fabric.strategy.name}, precision {args.precision}")

    step = 0
    accuracy = 0.0
    for epoch in range(args.epochs):
        model.train()
        # Sums over the epoch, kept on the device (no synchronising .item() per step), reduced across processes.
        loss_sum = torch.zeros((), device=fabric.device)
        train_correct = torch.zeros((), device=fabric.device)
        seen = torch.zeros((), device=fabric.device)
        for images, labels in batches(fabric, train_loader, f"epoch {epoch + 1}/{args.epochs}"):
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            fabric.backward(loss)
            optimizer.step()
            step += 1
            loss_sum += loss.detach() * labels.numel()
            train_correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.numel()
            if step % 10 == 0:
                fabric.log("train/loss", loss, step=step)
        loss_sum, train_correct, seen = (fabric.all_reduce(t, reduce_op="sum") for t in (loss_sum, train_correct, seen))
        train_loss, train_accuracy = (loss_sum / seen).item(), (train_correct / seen).item()

        model.eval()
        correct = torch.zeros((), device=fabric.device)
        total = torch.zeros((), device=fabric.device)
        with torch.no_grad():
            for images, labels in test_loader:
                correct += (model(images).argmax(1) == labels).sum()
                total += labels.numel()
        correct, total = fabric.all_reduce(correct, reduce_op="sum"), fabric.all_reduce(total, reduce_op="sum")
        accuracy = (correct / total).item()
        fabric.log_dict(
            {"train/epoch_loss": train_loss, "train/accuracy": train_accuracy, "test/accuracy": accuracy}, step=step
        )
        fabric.print(
            f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f}  train accuracy {train_accuracy:.3f}  "
            f"test accuracy {accuracy:.3f}"
        )

    if args.checkpoint:
        fabric.save(args.checkpoint, {"model": model, "optimizer": optimizer, "step": step, "accuracy": accuracy})
    for logger in fabric.loggers:
        logger.finalize("success")
    fabric.print(f"final test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
