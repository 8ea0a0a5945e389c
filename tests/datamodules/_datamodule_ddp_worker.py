"""Worker for test_datamodule_ddp: DigitsDataModule under Trainer(devices=2, strategy="ddp") on CPU.

``python _datamodule_ddp_worker.py OUT_DIR``; Lightning re-runs this script for rank 1. Each rank saves
the samplers Lightning ended up using, its train batches and its validation samples to
``OUT_DIR/rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule


class Record(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.train_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_items: list[tuple[float, int]] = []
        self.samplers: dict[str, str] = {}

    def on_train_start(self) -> None:
        self.samplers["train"] = type(self.trainer.train_dataloader.sampler).__name__
        self.samplers["val"] = type(self.trainer.val_dataloaders.sampler).__name__

    def training_step(self, batch: list, batch_idx: int) -> torch.Tensor:
        views, y = batch
        self.train_batches.append((views[0].clone(), views[1].clone(), y.clone()))
        return self.layer(torch.ones(1, 1)).sum() * 0.0

    def validation_step(self, batch: list, batch_idx: int) -> None:
        x, y = batch
        self.val_items += [(round(float(s), 3), int(t)) for s, t in zip(x.flatten(1).sum(1), y, strict=True)]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(out: Path) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        limit_train_batches=3,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Record()
    trainer.fit(model, DigitsDataModule(batch_size=32, views=SimCLRViews(), seed=0))
    result = {"samplers": model.samplers, "train": model.train_batches, "val": model.val_items}
    torch.save(result, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
