"""FreezeSchedule benchmarks: transfer accuracy by strategy and labelled-data size; step time and memory.

Transfer (``python -m benchmarks.run transfer``): a ResNet-18 (small-input stem, 16 px, 1 channel) is
pre-trained with labels on Fashion-MNIST classes 0-4 (T-shirt, Trouser, Pullover, Dress, Coat; 5,000
images, 1 epoch), then fine-tuned on classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with 100 /
1,000 / 10,000 labelled images by each strategy, and tested on the first 1,000 test images of classes 5-9.

Speed (``python -m benchmarks.run freeze_speed``): median step time (forward, backward, optimizer step,
through Trainer + FreezeSchedule) and memory of linear probe / partial / full at 28 px, batch 64. Each
strategy runs in a fresh process, so its peak RSS is its own.

``python -m benchmarks.freezing pretrain PATH`` writes the pre-trained checkpoint the fine-tuning
recipes (``recipes/finetune/*.yaml``) take as ``--model.init_args.pretrained=PATH``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sized
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from benchmarks._timing import markdown_table
from lightning_tl.callbacks import FreezeSchedule
from lightning_tl.callbacks.freezing import choose_strategy
from lightning_tl.datamodules import FashionMNISTDataModule
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages
from lightning_tl.modules import ImageClassifier

SIZE = 16
SOURCE, TARGET = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
LABELS = (100, 1_000, 10_000)
# (optimizer steps, batch size) per labelled-set size: ~6 epochs of 100, ~2 of 1,000, ~0.5 of 10,000
# (sized so the whole table fits ~10 minutes on 2 CPU cores)
BUDGET = {100: (20, 32), 1_000: (30, 64), 10_000: (40, 128)}
TEST_IMAGES = 1_000


class OptimizerSettings(TypedDict):
    """``ImageClassifier``'s optimizer arguments."""

    optimizer: str
    lr: float
    weight_decay: float


# AdamW at one lr for every strategy and for pre-training: adaptive steps keep a fixed, untuned lr fair
# to both a linear probe and full fine-tuning (SGD at lr 0.02 left the 20-step probes under-trained)
OPTIMIZER: OptimizerSettings = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0}

warnings.filterwarnings("ignore", message=".*randomly initialised.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class FashionMNISTClasses(FashionMNISTDataModule):
    """Fashion-MNIST restricted to ``classes`` (labels renumbered 0..k-1 in that order)."""

    def __init__(self, classes: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classes = classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _load_splits(self) -> dict[str, ImageSource]:
        out: dict[str, ImageSource] = {}
        lookup = torch.full((10,), -1, dtype=torch.long)
        lookup[torch.tensor(self.classes)] = torch.arange(len(self.classes))
        for split, source in super()._load_splits().items():
            assert isinstance(source, InMemoryImages)
            keep = torch.nonzero(lookup[source.labels] >= 0).flatten()
            out[split] = InMemoryImages(source.images[keep], lookup[source.labels[keep]])
        return out


def cpu_trainer(**kwargs: Any) -> Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar, summary or validation (benchmark runs)."""
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kwargs,
    )


def pretrain(path: str, images: int = 5_000, epochs: int = 1) -> float:
    """Supervised pre-training on classes 0-4; saves a Lightning checkpoint; returns its test accuracy."""
    torch.manual_seed(0)
    data = FashionMNISTClasses(SOURCE, image_size=SIZE, batch_size=64, val_size=1000, train_subset=images)
    model = ImageClassifier("resnet18", small_input=True, in_channels=1, num_classes=5, **OPTIMIZER)
    trainer = cpu_trainer(max_epochs=epochs)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    data.batch_size = 250
    return cpu_trainer(limit_test_batches=TEST_IMAGES // 250).test(model, datamodule=data, verbose=False)[0][
        "test_acc"
    ]


def strategy_callback(name: str, steps: int) -> FreezeSchedule:
    if name == "gradual":  # ULMFiT-style: one group per fifth of the run from the top, layer-wise lrs
        milestones: dict[int, int | str | list[str]] = {steps * k // 5: 1 for k in (1, 2, 3)}
        milestones[steps * 4 // 5] = "all"
        return FreezeSchedule(
            "linear_probe", unfreeze=milestones, interval="step", lr_decay=0.5, warmup_steps=5
        )
    return FreezeSchedule(name, trainable_groups=1)


def finetune(
    pretrained: str, strategy: str, labels: int, lr: float | None = None
) -> tuple[float, str, float]:
    """Test accuracy on classes 5-9, the strategy actually used, and the wall time of training."""
    torch.manual_seed(0)
    steps, batch = BUDGET[labels]
    data = FashionMNISTClasses(TARGET, image_size=SIZE, batch_size=batch, val_size=1000, train_subset=labels)
    model = ImageClassifier(
        "resnet18",
        pretrained=pretrained,
        small_input=True,
        in_channels=1,
        num_classes=5,
        **((OPTIMIZER | {"lr": lr}) if lr is not None else OPTIMIZER),
    )
    freeze = strategy_callback(strategy, steps)
    trainer = cpu_trainer(max_steps=steps, max_epochs=-1, callbacks=[freeze])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    data.batch_size = 250
    result = cpu_trainer(limit_test_batches=TEST_IMAGES // 250).test(model, datamodule=data, verbose=False)
    return result[0]["test_acc"], str(freeze.resolved_strategy), seconds


def run_transfer() -> str:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pretrained.ckpt")
        source_acc = pretrain(path)
        rows = []
        for labels in LABELS:
            row: list[object] = [f"{labels:,}"]
            accs = {}
            for strategy in ("linear_probe", "partial", "full", "gradual"):
                accs[strategy], _, _ = finetune(path, strategy, labels)
                row.append(f"{accs[strategy]:.3f}")
            # "auto": the rule FreezeSchedule("auto") applies to this train split (same function, same
            # counts); its run is the identical, seeded run of the strategy it picks, so it is not repeated
            data = FashionMNISTClasses(TARGET, image_size=SIZE, val_size=1000, train_subset=labels)
            chosen = choose_strategy(len(cast(Sized, data.labelled_dataset("train"))), data.num_classes)
            row.append(f"{chosen} ({accs[chosen]:.3f})")
            rows.append(row)
    minutes = (time.perf_counter() - start) / 60
    title = (
        f"Transfer: ResNet-18 ({SIZE} px) pre-trained on Fashion-MNIST classes 0-4 (test acc "
        f"{source_acc:.3f} there), fine-tuned on classes 5-9; test accuracy on {TEST_IMAGES:,} test "
        f"images of classes 5-9. Steps x batch per size: {BUDGET}; AdamW lr 1e-3 (head), "
        f"cosine; whole table {minutes:.1f} min\n\n"
    )
    header = ["labelled images", "linear_probe", "partial (layer4+head)", "full", "gradual", "auto picks"]
    return title + markdown_table(header, rows)


def run_probe_lr(lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)) -> str:
    """Linear probe alone at several head lrs (same pre-training, budgets and test images as transfer)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pretrained.ckpt")
        pretrain(path)
        rows = [
            [f"{lr:g}"] + [f"{finetune(path, 'linear_probe', n, lr=lr)[0]:.3f}" for n in LABELS] for lr in lrs
        ]
    minutes = (time.perf_counter() - start) / 60
    title = f"Linear probe by AdamW lr (transfer setting otherwise); {minutes:.1f} min\n\n"
    return title + markdown_table(["head lr", *[f"{n:,} labels" for n in LABELS]], rows)


class _StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


def speed_one(
    strategy: str, batch: int = 64, size: int = 28, steps: int = 12, warmup: int = 2
) -> dict[str, float]:
    """Median step time (after ``warmup`` steps) and memory of one strategy; meant for a fresh process."""
    torch.manual_seed(0)
    x, y = torch.randn(batch * steps, 1, size, size), torch.randint(0, 5, (batch * steps,))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, generator=torch.Generator().manual_seed(0))
    model = ImageClassifier("resnet18", small_input=True, in_channels=1, num_classes=5, lr=0.01)
    timer = _StepTimer()
    cpu_trainer(max_steps=steps, callbacks=[FreezeSchedule(strategy, trainable_groups=1), timer]).fit(
        model, loader
    )
    saved: dict[int, int] = {}  # bytes kept for backward in one step, each storage counted once

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(model(x[:batch]), y[:batch]).backward()
    return {
        "step_s": statistics.median(timer.times[warmup:]),
        "best_s": min(timer.times[warmup:]),
        "saved_mb": sum(saved.values()) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable": float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
    }


def run_speed() -> str:
    results = {}
    for strategy in ("full", "partial", "linear_probe"):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.freezing", "speed_one", strategy],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        results[strategy] = json.loads(proc.stdout.strip().splitlines()[-1])
    full, full_best = results["full"]["step_s"], results["full"]["best_s"]
    rows = [
        [
            name,
            f"{int(r['trainable']):,}",
            f"{r['step_s'] * 1000:.0f}",
            f"{r['step_s'] / full:.2f}",
            f"{r['best_s'] * 1000:.0f}",
            f"{r['best_s'] / full_best:.2f}",
            f"{r['saved_mb']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        for name, r in results.items()
    ]
    title = (
        "Step time (forward + backward + SGD step through Trainer + FreezeSchedule; median and best of 10 "
        "after 2 warm-up steps) "
        f"and memory, ResNet-18 (small-input stem), batch 64 of 28 px, {torch.get_num_threads()} threads\n\n"
    )
    header = [
        "strategy",
        "trainable params",
        "median step ms",
        "x full",
        "best step ms",
        "x full",
        "saved for backward (MB)",
        "peak RSS (MB)",
    ]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "transfer"
    if command == "speed_one":
        print(json.dumps(speed_one(sys.argv[2])))
    elif command == "pretrain":
        target = sys.argv[2] if len(sys.argv) > 2 else "runs/pretrained/fashion_mnist_0-4_resnet18_16px.ckpt"
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        print(f"test accuracy on classes 0-4: {pretrain(target):.3f}; checkpoint: {target}")
    elif command == "speed":
        print(run_speed())
    else:
        print(run_transfer())
