"""Worker for test_adapter_ddp: a two-domain AdapterResNet on 2 gloo processes.

``python _adapter_ddp_worker.py MODE OUT_DIR``; MODE is ``mix`` (strategy ``ddp``) or ``alternate``
(``ddp_find_unused_parameters_true``: each backward touches one domain's parameters). Saves, per rank,
the labels of every train batch, the initial and the final state dict to ``OUT_DIR/rank{R}.pt``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

from lightning_tl.datamodules import DigitsDataModule, MultiDomainDataModule
from lightning_tl.modules import AdapterResNet


class Labels(Callback):
    def __init__(self) -> None:
        self.labels: list[dict[str, list[int]]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.labels.append({d: b[1].tolist() for d, b in batch.items()})


def main(mode: str, out: Path) -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AdapterResNet(
            "timm/resnet18",
            in_channels=1,
            num_classes={"a": 10, "b": 10},
            domain_batches=mode,  # type: ignore[arg-type]
            backbone_kwargs={"channels": [8, 16, 16, 16], "layers": [1, 1, 1, 1]},
        )
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = MultiDomainDataModule(
        {
            "a": DigitsDataModule(image_size=8, batch_size=8, seed=0, train_subset=64),
            "b": DigitsDataModule(image_size=8, batch_size=8, seed=1, train_subset=32),
        }
    )
    labels = Labels()
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp" if mode == "mix" else "ddp_find_unused_parameters_true",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[labels],
    )
    trainer.fit(model, datamodule=data)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(
        {"labels": labels.labels, "initial": initial, "final": final}, out / f"rank{trainer.global_rank}.pt"
    )


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
