"""Worker for test_clip_ddp: LiT-tune a tiny CLIP on captioned digits, then zero-shot validate.

``python _clip_ddp_worker.py DEVICES LOCAL_LOSS OUT_DIR``. With 2 devices it uses ``strategy="ddp"``
(Lightning re-runs this script for rank 1) and half the batch per rank, so the global batches hold
the single-process batches' pairs. The image tower is locked (eval-mode batch norm), so features do
not depend on how the batch is split. Every rank saves its result to ``OUT_DIR/d{D}_l{L}_rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from lightning_tl.callbacks import ZeroShotEvaluator
from lightning_tl.datamodules import ImageTextDataModule
from lightning_tl.modules import CLIP

GLOBAL_BATCH = 32


def main(devices: int, local_loss: bool, out: Path) -> None:
    L.seed_everything(0)
    model = CLIP(
        image_backbone="timm/resnet18",
        backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
        in_channels=1,
        embed_dim=16,
        text_width=32,
        text_layers=1,
        text_heads=2,
        context_length=12,
        lock_image=True,
        local_loss=local_loss,
        optimizer="momentum",  # timm: plain SGD (its "sgd" is Nesterov)
        lr=0.5,
        momentum=0.0,
        weight_decay=0.0,
        warmup_epochs=0,
    )
    zero_shot = ZeroShotEvaluator(templates=["a photo of the digit {}."])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=3,
        limit_val_batches=3,
        num_sanity_val_steps=0,
        callbacks=[zero_shot],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    data = ImageTextDataModule("digits", image_size=8, context_length=12, batch_size=GLOBAL_BATCH // devices)
    trainer.fit(model, data)
    metrics = trainer.validate(model, data, verbose=False)[0]
    text = {k: v.detach().clone() for k, v in model.model.text.state_dict().items()}
    result = {"text": text, "logit_scale": model.logit_scale.detach().clone(), "metrics": metrics}
    torch.save(result, out / f"d{devices}_l{int(local_loss)}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3]))
