"""Worker for test_adaptation_ddp: a few DANN / CDAN / MCC steps on digits -> digits-M, then validation.

``python _adaptation_ddp_worker.py METHOD RUN DEVICES OUT_DIR``; METHOD is ``dann``, ``cdan`` (multilinear
conditioning; both per-example losses) or ``mcc_cdan_e`` (MCC + CDAN+E with the randomized map: batch-level
terms). RUN ``global`` trains the module as it is; ``per_rank`` (one process) computes every loss
term on the two halves that 2 DDP ranks would see (positions ``r::2`` of the global batch: each
rank's SeededSamplers take positions ``rank::2`` with half the batch size) and averages them: what
DDP's gradient averaging gives. Every rank saves its weights, buffers and validation metrics to
``OUT_DIR/{METHOD}_{RUN}_devices{D}_rank{R}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule
from lightning_tl.modules import CDAN, DANN, MCC
from lightning_tl.nn import SmallConvNet

GLOBAL_BATCH = 32
RANKS = 2


class PerRankMCC(MCC):
    """MCC whose batch-level terms are computed per emulated rank (positions r::2) and averaged."""

    def domain_loss(self, d_logits: Tensor, is_target: Tensor, logits: Tensor | None) -> Tensor:
        assert logits is not None
        n_s = int((is_target == 0).sum())
        total = d_logits.new_zeros(())
        for r in range(RANKS):
            rows = torch.cat([torch.arange(r, n_s, RANKS), torch.arange(n_s + r, len(is_target), RANKS)])
            total = total + super().domain_loss(d_logits[rows], is_target[rows], logits[rows])
        return total / RANKS

    def target_loss(self, target_logits: Tensor) -> Tensor:
        total = target_logits.new_zeros(())
        for r in range(RANKS):
            total = total + super().target_loss(target_logits[r::RANKS])
        return total / RANKS


def build(method: str, run: str) -> L.LightningModule:
    common: dict[str, Any] = {
        "backbone": SmallConvNet(in_chans=3, channels=(4, 8)),
        "domain_hidden": (16,),
        "domain_dropout": 0.0,
        "lr": 0.05,
    }
    if method == "dann":
        return DANN(**common)
    if method == "cdan":
        return CDAN(conditioning="multilinear", **common)
    cls = PerRankMCC if run == "per_rank" else MCC
    return cls(
        adversarial=True,
        conditioning="randomized",
        randomized_dim=64,
        entropy_conditioning=True,
        mcc_weight=5.0,
        temperature=0.5,
        **common,
    )


def main(method: str, run: str, devices: int, out: Path) -> None:
    L.seed_everything(0, verbose=False)
    batch = GLOBAL_BATCH // devices
    data = DomainAdaptationDataModule(
        DigitsDataModule(rgb=True, batch_size=batch, seed=1), DigitsMDataModule(batch_size=batch, seed=1)
    )
    model = build(method, run)
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
    torch.save(result, out / f"{method}_{run}_devices{devices}_rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
