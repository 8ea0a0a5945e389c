"""Worker for test_dann_ddp: a few DANN steps on digits -> digits-M, then validation.

``python _dann_ddp_worker.py DEVICES OUT_DIR``. With 2 devices it uses ``strategy="ddp"`` (Lightning
re-runs this script for rank 1); each rank's SeededSamplers take positions ``rank::2`` with half the
batch size, so the global batches are the single-process ones. Every rank saves its weights, its
train batches' sample counts and the validation metrics to ``OUT_DIR/devices{D}_rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule
from lightning_tl.modules import DANN
from lightning_tl.nn import SmallConvNet

GLOBAL_BATCH = 32


def main(devices: int, out: Path) -> None:
    L.seed_everything(0, verbose=False)
    batch = GLOBAL_BATCH // devices
    data = DomainAdaptationDataModule(
        DigitsDataModule(rgb=True, batch_size=batch, seed=1), DigitsMDataModule(batch_size=batch, seed=1)
    )
    model = DANN(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), domain_hidden=(16,), domain_dropout=0.0, lr=0.05
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=4,
        limit_val_batches=None,
        num_sanity_val_steps=0,
        val_check_interval=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    result = {"state": model.state_dict(), "metrics": metrics, "coeff": float(model.grl.coeff)}
    torch.save(result, out / f"devices{devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
