"""Table (f): SimCLR on Fashion-MNIST with per-sample views vs batched on-device views.

The same SimCLR run (a quarter-width ResNet-18 with the small-input stem, 28 px, batch 256, LARS,
``limit_train_batches`` steps per epoch) three times, changing only where the views are made:
per sample in the training process, per sample in one DataLoader worker, or per batch after the
transfer (``SimCLRViews(on_device=True)``). Reports the median wall time per epoch and a weighted kNN
accuracy (k=20) on the validation split with a 10,000-image train bank after the last epoch.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L

from benchmarks._timing import markdown_table
from lightning_tl.augment import SimCLRViews
from lightning_tl.callbacks import KNNMonitor
from lightning_tl.datamodules import FashionMNISTDataModule
from lightning_tl.modules import SimCLR

PATHS: list[tuple[str, bool, int]] = [  # (label, views on the device, DataLoader workers)
    ("per-sample torchvision v2, in the training process", False, 0),
    ("per-sample torchvision v2, 1 DataLoader worker", False, 1),
    ("batched on-device views (`views: {on_device: true}`)", True, 0),
]
CHANNELS = [16, 32, 64, 128]


class EpochTimer(L.Callback):
    """Wall time from the start of each train epoch to its last batch (the kNN evaluation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self.seconds.append(0.0)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.seconds[-1] = time.perf_counter() - self._start


def _train(on_device: bool, workers: int, epochs: int, steps: int, batch: int) -> tuple[float, float]:
    L.seed_everything(0)
    timer = EpochTimer()
    knn = KNNMonitor(k=20, every_n_epochs=epochs, max_bank_size=10_000, evaluate_at_start=False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=steps,
        limit_val_batches=1,  # the kNN monitor runs at the end of validation epochs
        check_val_every_n_epoch=epochs,
        num_sanity_val_steps=0,
        callbacks=[timer, knn],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = SimCLR(
        backbone="timm/resnet18",
        backbone_kwargs={"channels": CHANNELS},
        in_channels=1,
        temperature=0.2,
        warmup_epochs=0.5,
    )
    views = SimCLRViews(crop_scale=(0.2, 1.0), on_device=on_device)
    data = FashionMNISTDataModule(batch_size=batch, views=views, num_workers=workers)
    trainer.fit(model, datamodule=data)
    return statistics.median(timer.seconds), knn.history[-1][1]


def run(epochs: int = 2, steps: int = 20, batch: int = 256) -> str:
    rows = []
    for label, on_device, workers in PATHS:
        seconds, accuracy = _train(on_device, workers, epochs, steps, batch)
        rows.append([label, f"{seconds:.1f}", f"{steps * batch / seconds:.0f}", f"{accuracy:.3f}"])
    title = (
        f"SimCLR on Fashion-MNIST (28 px, timm/resnet18 with channels {CHANNELS}, batch {batch}, "
        f"{steps} steps per epoch, {epochs} epochs); kNN after the last epoch\n\n"
    )
    header = ["where the views are made", "s / epoch (median)", "images / s", "kNN accuracy (val)"]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
