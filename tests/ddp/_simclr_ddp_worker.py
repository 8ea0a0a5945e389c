"""Worker for test_simclr_ddp: a few SimCLR steps on digits, 1 process or 2 (strategy="ddp", gloo).

``python _simclr_ddp_worker.py DEVICES OUT_DIR``. Each rank gets GLOBAL_BATCH / DEVICES images; the
SeededSampler gives rank r positions r::W of the same permutation and seeds every image's views by
its index (the digits' views are made on the device, each image from its own seed), so the global
batch holds the same images and views as the single-process batch.
Batch norm is per process under DDP (SyncBatchNorm needs GPUs), so the single-process reference,
:class:`PerRankBatchNorm`, encodes each rank's images in a separate call: then its loss on the global
batch and its gradients are what DDP computes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import SimCLR

GLOBAL_BATCH = 32


class Record(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.losses.append(trainer.callback_metrics["train_loss"].item())  # synced over ranks


class PerRankBatchNorm(SimCLR):
    """Single-process reference: rank r's rows (r::2 of each view) pass backbone and head together."""

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        views, _ = batch
        n = views[0].shape[0]
        per_rank = [self.project(self.encode(torch.cat([v[r::2] for v in views]))) for r in range(2)]
        z1 = torch.cat([z[: n // 2] for z in per_rank])  # (N, D): first views, rank-major rows
        z2 = torch.cat([z[n // 2 :] for z in per_rank])  # (N, D): their partners, same order
        loss = self.compute_loss([z1, z2])
        self.log("train_loss", loss)
        return {"loss": loss}


def main(devices: int, out: Path) -> None:
    L.seed_everything(0)
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=3,
        precision="64-true",  # float64: the comparison is not blurred by float32 summation order
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    model = (SimCLR if devices > 1 else PerRankBatchNorm)(
        backbone="resnet18",
        in_channels=1,
        hidden_dim=64,
        output_dim=32,
        optimizer="sgd",
        lr=0.05,
        warmup_epochs=0,
    )
    data = DigitsDataModule(
        batch_size=GLOBAL_BATCH // devices, image_size=8, views=SimCLRViews(crop_scale=(0.4, 1.0))
    )
    trainer.fit(model, datamodule=data)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save(
        {"losses": record.losses, "params": params}, out / f"devices{devices}_rank{trainer.global_rank}.pt"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
