"""Worker for test_ssl_modules_ddp: 3 steps of BYOL, SimSiam, BarlowTwins, VICReg and DINO, 1 process or 2.

``python _ssl_modules_ddp_worker.py DEVICES OUT_DIR``: the five fits run one after the other in the same
processes (strategy="ddp", gloo, float64). As in _simclr_ddp_worker.py, rank r gets rows r::2 of the
single-process batch (same images, same views; DINO's two local views included).

What is defined on the global batch is compared exactly: the per-image losses (BYOL, SimSiam, DINO), the
batch statistics of Barlow Twins and VICReg (``gather=True``), DINO's centre, the gradients and so the
weights, and the EMA teachers that follow them. Batch norm is per process by design (SyncBatchNorm needs
GPUs), so the single-process reference emulates it: every batch norm of the reference model (backbone,
heads, teacher) normalises the rows of each rank separately, and the reference reorders every view
rank-major, the order in which the DDP ranks' rows are gathered.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_tl.augment import DINOViews, SimCLRViews
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import BYOL, DINO, BarlowTwins, SimSiam, VICReg

GLOBAL_BATCH, WORLD = 16, 2
ROWS = GLOBAL_BATCH // WORLD  # images per rank

TINY = {"backbone": "timm/resnet18", "backbone_kwargs": {"channels": [8, 8, 16, 16]}, "in_channels": 1}
TRAIN = {"optimizer": "sgd", "lr": 0.05, "warmup_epochs": 0}
METHODS: dict[str, tuple[type[L.LightningModule], dict[str, Any]]] = {
    "BYOL": (BYOL, {"hidden_dim": 32, "output_dim": 16, "predictor_hidden_dim": 32, "teacher_momentum": 0.9}),
    "SimSiam": (SimSiam, {"hidden_dim": 32, "output_dim": 32, "predictor_hidden_dim": 8}),
    "BarlowTwins": (BarlowTwins, {"hidden_dim": 32, "output_dim": 24}),
    "VICReg": (VICReg, {"hidden_dim": 32, "output_dim": 24}),
    "DINO": (
        DINO,
        {
            "hidden_dim": 32,
            "bottleneck_dim": 8,
            "output_dim": 64,
            "teacher_momentum": 0.9,
            "freeze_last_layer": 0,  # so the last layer's gradient is compared too
            "warmup_teacher_temp_epochs": 0,
        },
    ),
}
#: State recorded after every step (besides the loss): what must stay equal on every rank.
TRACKED = {"BYOL": ("teacher_head.",), "DINO": ("criterion.center", "teacher_head.")}


class PerRankBatchNorm(_BatchNorm):
    """Batch norm of the reference: in training, the rows of each DDP rank normalised on their own.

    A batch is made of whole views of the global batch, each rank-major: row i belongs to the rank
    ``(i % GLOBAL_BATCH) // ROWS``. Mixed into the class of each batch-norm layer of the reference.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        rank_of_row = (torch.arange(x.shape[0], device=x.device) % GLOBAL_BATCH) // ROWS  # (T,)
        rows = [torch.nonzero(rank_of_row == r).squeeze(1) for r in range(WORLD)]
        out = torch.cat([super(PerRankBatchNorm, self).forward(x[idx]) for idx in rows])  # rank-grouped rows
        return out[torch.argsort(torch.cat(rows))]  # back in the input order


def per_rank_batch_norm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.__class__ = type(f"PerRank{type(module).__name__}", (PerRankBatchNorm, type(module)), {})


def rank_major(cls: type[L.LightningModule]) -> type[L.LightningModule]:
    """``cls`` whose training batches are reordered as DDP gathers them: rank 0's rows, then rank 1's."""

    def training_step(self: L.LightningModule, batch: Any, batch_idx: int) -> Any:
        views, labels = batch
        views = [torch.cat([v[r::WORLD] for r in range(WORLD)]) for v in views]
        return cls.training_step(self, (views, labels), batch_idx)

    return type(f"RankMajor{cls.__name__}", (cls,), {"training_step": training_step})


class Record(L.Callback):
    """Per step: the synced loss and this rank's tracked state."""

    def __init__(self, keep: tuple[str, ...]) -> None:
        self.keep = keep
        self.losses: list[float] = []
        self.states: list[dict[str, Tensor]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.losses.append(trainer.callback_metrics["train_loss"].item())  # mean over ranks
        state = module.state_dict()
        self.states.append({k: v.clone() for k, v in state.items() if self.keep and k.startswith(self.keep)})


def fit(method: str, devices: int) -> tuple[int, dict[str, Any]]:
    cls, kwargs = METHODS[method]
    L.seed_everything(0)
    model = (cls if devices > 1 else rank_major(cls))(**TINY, **TRAIN, **kwargs)
    if devices == 1:
        per_rank_batch_norm(model)
    record = Record(TRACKED.get(method, ()))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=3,
        precision="64-true",  # float64: the comparison is not blurred by summation order
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    views = (
        DINOViews(local_views=2, local_image_size=8)
        if method == "DINO"
        else SimCLRViews(crop_scale=(0.4, 1.0))
    )
    data = DigitsDataModule(batch_size=GLOBAL_BATCH // devices, image_size=16, views=views)
    trainer.fit(model, datamodule=data)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}  # the teacher's too
    return trainer.global_rank, {"losses": record.losses, "states": record.states, "params": params}


def main(devices: int, out: Path) -> None:
    results, rank = {}, 0
    for method in METHODS:
        rank, results[method] = fit(method, devices)
    torch.save(results, out / f"devices{devices}_rank{rank}.pt")


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
