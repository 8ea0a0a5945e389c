"""Worker for test_moco_ddp: a few MoCo steps on digits, 1 process or 2 (strategy="ddp", gloo).

``python _moco_ddp_worker.py DEVICES OUT_DIR``. As in _simclr_ddp_worker.py, rank r gets rows r::2 of
the single-process batch (same images, same views). The single-process reference, :class:`Reference`,
reorders each batch rank-major and computes what the two processes compute together: query features
with per-rank batch norm (each rank's rows encoded in a separate call) and keys with shuffle-BN
(the same permutation of the global key batch, cut into one slice per rank). Float64 throughout.
The queue is 40 keys for a global batch of 16: writes wrap around in the middle of a batch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from lightning_tl import distributed as dist
from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import MoCo
from lightning_tl.nn import shuffle_permutation, shuffled_forward

GLOBAL_BATCH, WORLD = 16, 2


class Record(L.Callback):
    """Per step: the synced loss, this rank's queue, pointer and key head (and after the last step the key
    backbone), before any re-broadcast."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.states: list[dict[str, torch.Tensor]] = []
        self.shuffle: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # shuffle-BN on uneven rows (3 on rank 0, 5 on rank 1) with a row-wise "encoder"
        r = dist.rank()
        x = (100 * r + torch.arange(3 + 2 * r, dtype=torch.float64))[:, None].repeat(1, 2)  # (N_r, 2)
        seen: list[torch.Tensor] = []

        def encoder(rows: torch.Tensor) -> torch.Tensor:
            seen.append(rows.clone())
            return 2 * rows + 1

        out = shuffled_forward(encoder, x, seed=5)
        self.shuffle = {"input": x, "output": out, "seen": seen[0]}

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self.losses.append(trainer.callback_metrics["train_loss"].item())  # synced over ranks
        # the key backbone (a float64 ResNet-18, 90 MB) only after the last step, to keep the files small
        last = trainer.global_step >= trainer.max_steps
        keep = ("queue.", "key_head.", "key_backbone.") if last else ("queue.", "key_head.")
        self.states.append({k: v.clone() for k, v in module.state_dict().items() if k.startswith(keep)})


class Reference(MoCo):
    """One process computing what 2 DDP processes compute on the same global batch."""

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        views, labels = batch
        rank_major = [torch.cat([v[r::WORLD] for r in range(WORLD)]) for v in views]  # DDP gather order
        return super().training_step((rank_major, labels), batch_idx)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super(Reference, self).encode(part) for part in x.chunk(WORLD)])  # per-rank BN

    @torch.no_grad()
    def encode_keys(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        perm = shuffle_permutation(x.shape[0], seed)
        slices = [F.normalize(self.key_head(self.key_backbone(x[part])), dim=1) for part in perm.chunk(WORLD)]
        keys = torch.empty_like(torch.cat(slices))
        keys[perm] = torch.cat(slices)
        return keys


def main(devices: int, out: Path) -> None:
    L.seed_everything(0)
    record = Record()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=4,
        precision="64-true",
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    model = (MoCo if devices > 1 else Reference)(
        backbone="resnet18",
        in_channels=1,
        hidden_dim=64,
        output_dim=32,
        queue_size=40,
        key_momentum=0.9,
        symmetric=True,
        optimizer="sgd",
        lr=0.05,
    )
    data = DigitsDataModule(
        batch_size=GLOBAL_BATCH // devices, image_size=8, views=SimCLRViews(crop_scale=(0.4, 1.0))
    )
    trainer.fit(model, datamodule=data)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save(
        {"losses": record.losses, "states": record.states, "params": params, "shuffle": record.shuffle},
        out / f"devices{devices}_rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
