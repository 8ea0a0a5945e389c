"""Transfer by freezing strategy with a strong pre-training and per-strategy learning rates (a GPU run).

The CPU transfer table (:mod:`benchmarks.freezing`) had to use a weak pre-training (1 epoch on 5,000
images at 16 px) and one shared lr, which left the linear probe under-trained. This protocol is the
one used in transfer studies (e.g. Kornblith et al., "Do Better ImageNet Models Transfer Better?",
CVPR 2019): a well-trained source model, and each strategy's learning rate picked on a held-out
validation split before testing.

- Pre-training: ResNet-18 (small-input stem, 28 px, 1 channel), supervised on every training image
  of Fashion-MNIST classes 0-4 for ``PRETRAIN_EPOCHS`` epochs (AdamW 1e-3, cosine).
- Fine-tuning on the unseen classes 5-9 with 100 / 1,000 / 10,000 labelled images, ``BUDGET`` steps;
  every strategy tries each lr of its ``LRS`` row; the lr with the best validation accuracy (the 500
  validation images of classes 5-9, kept out of training) gives the reported test accuracy (the
  whole test split of classes 5-9, 5,000 images).
- "auto" is the strategy :func:`~lightning_tl.callbacks.freezing.choose_strategy` picks for the train
  split, with that strategy's result.

``PYTHONPATH=. FMNIST_ROOT=<folder with the *-ubyte.gz files> python3 -m benchmarks.transfer_gpu``
(bf16-mixed + channels-last on a CUDA card; on a CPU it runs too, slowly). A wall-clock guard
(``TIME_LIMIT_S``) stops starting new runs so the table prints inside a lent GPU session.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import Callback, Trainer

from benchmarks._timing import markdown_table
from benchmarks.freezing import SOURCE, TARGET, FashionMNISTClasses, strategy_callback
from lightning_tl.callbacks import ChannelsLast
from lightning_tl.callbacks.freezing import choose_strategy
from lightning_tl.datamodules.datasets import ImageSource
from lightning_tl.modules import ImageClassifier

SIZE = 28
PRETRAIN_EPOCHS = 8
# LABELS="10,25,50" and STRATEGIES="linear_probe,full" in the environment run a subset
LABELS = tuple(int(n) for n in os.environ.get("LABELS", "100,1000,10000").split(","))
BUDGET = {100: (100, 32), 1_000: (200, 64), 10_000: (300, 128)}  # (optimizer steps, batch size)
STRATEGIES = tuple(os.environ.get("STRATEGIES", "linear_probe,partial,full,gradual").split(","))
LRS = {"linear_probe": (1e-2, 1e-1), "partial": (1e-4, 1e-3), "full": (1e-4, 1e-3), "gradual": (1e-4, 1e-3)}
TIME_LIMIT_S = float(os.environ.get("TIME_LIMIT_S", "360"))
WORKERS = int(os.environ.get("WORKERS", "8"))
_LOADED: dict[tuple[int, ...], dict[str, ImageSource]] = {}

warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _trainer(callbacks: list[Callback] | None = None, **kwargs: Any) -> Trainer:
    cuda = torch.cuda.is_available()
    return Trainer(
        callbacks=[*(callbacks or []), *([ChannelsLast()] if cuda else [])],
        accelerator="cuda" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


class _Classes(FashionMNISTClasses):
    """Reads the files once per class set for all runs (each run's datamodule takes a shallow copy)."""

    def _load_splits(self) -> dict[str, ImageSource]:
        key = tuple(self.classes)
        if key not in _LOADED:
            _LOADED[key] = super()._load_splits()
        return dict(_LOADED[key])


def _data(classes: list[int], labels: int | None, batch: int) -> FashionMNISTClasses:
    return _Classes(
        classes,
        root=os.environ.get("FMNIST_ROOT"),
        image_size=SIZE,
        batch_size=batch,
        val_size=1000,
        train_subset=labels,
        num_workers=WORKERS,
    )


def _evaluate(model: ImageClassifier, data: FashionMNISTClasses) -> tuple[float, float]:
    data.batch_size = 500
    trainer = _trainer()
    val = trainer.validate(model, datamodule=data, verbose=False)[0]["val_acc"]
    test = trainer.test(model, datamodule=data, verbose=False)[0]["test_acc"]
    return val, test


def pretrain(path: str, epochs: int = PRETRAIN_EPOCHS) -> float:
    """Supervised pre-training on every train image of classes 0-4; returns test accuracy there."""
    torch.manual_seed(0)
    data = _data(SOURCE, None, 256)
    model = ImageClassifier(
        "resnet18", small_input=True, in_channels=1, num_classes=5, optimizer="adamw", lr=1e-3
    )
    trainer = _trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return _evaluate(model, data)[1]


def finetune(path: str, strategy: str, labels: int, lr: float) -> tuple[float, float]:
    """(validation accuracy, test accuracy) on classes 5-9 after fine-tuning with ``strategy`` at ``lr``."""
    torch.manual_seed(0)
    steps, batch = BUDGET.get(labels, (100, min(32, labels)))  # fewer labels: 100 steps
    data = _data(TARGET, labels, batch)
    model = ImageClassifier(
        "resnet18",
        pretrained=path,
        small_input=True,
        in_channels=1,
        num_classes=5,
        optimizer="adamw",
        lr=lr,
        weight_decay=0.0,
    )
    freeze = strategy_callback(strategy, steps)
    _trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0, callbacks=[freeze]).fit(
        model, datamodule=data
    )
    return _evaluate(model, data)


def run() -> str:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pretrained.ckpt")
        source_acc = pretrain(path)
        pretrain_min = (time.perf_counter() - start) / 60
        rows, detail = [], []
        for labels in LABELS:
            row: list[object] = [f"{labels:,}"]
            best: dict[str, float] = {}
            for strategy in STRATEGIES:
                tried = []
                for lr in LRS[strategy]:
                    if time.perf_counter() - start > TIME_LIMIT_S:
                        tried.append((lr, float("nan"), float("nan")))
                        continue
                    val, test = finetune(path, strategy, labels, lr)
                    tried.append((lr, val, test))
                    detail.append([f"{labels:,}", strategy, f"{lr:g}", f"{val:.3f}", f"{test:.3f}"])
                    print(f"{labels} {strategy} lr={lr:g}: val {val:.3f} test {test:.3f}", flush=True)
                done = [t for t in tried if t[1] == t[1]]  # not NaN
                if done:
                    lr, _, best[strategy] = max(done, key=lambda t: t[1])
                    row.append(f"{best[strategy]:.3f} (lr {lr:g})")
                else:
                    row.append("not run (time limit)")
            split = _data(TARGET, labels, 64)
            chosen = choose_strategy(len(cast(Sized, split.labelled_dataset("train"))), split.num_classes)
            row.append(f"{chosen} ({best[chosen]:.3f})" if chosen in best else chosen)
            rows.append(row)
    minutes = (time.perf_counter() - start) / 60
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    title = (
        f"Transfer on {device}: ResNet-18 ({SIZE} px) pre-trained {PRETRAIN_EPOCHS} epochs on Fashion-MNIST "
        f"classes 0-4 (test acc {source_acc:.3f} there; {pretrain_min:.1f} min), fine-tuned on classes 5-9; "
        f"test accuracy on the 5,000 test images of classes 5-9 at the lr with the best validation accuracy. "
        f"Steps x batch per size: {BUDGET}, else 100 x min(32, labels); AdamW, cosine; "
        f"whole run {minutes:.1f} min\n\n"
    )
    names = {"partial": "partial (layer4+head)"}
    header = ["labelled images", *[names.get(s, s) for s in STRATEGIES], "auto picks"]
    every = markdown_table(["labelled images", "strategy", "lr", "val acc", "test acc"], detail)
    return title + markdown_table(header, rows) + "\n\nEvery run:\n\n" + every


if __name__ == "__main__":
    print(run(), flush=True)
