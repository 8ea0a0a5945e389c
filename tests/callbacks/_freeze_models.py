"""A plain user LightningModule (not ours) and data for the FreezeSchedule tests.

``UserNet`` has a ``backbone`` of three conv+BN blocks (an ``nn.Sequential``: groups found
automatically) and a linear ``head``. Its only FreezeSchedule-specific line is the optimizer's
``freeze_param_groups(self, lr=...)``. ``scheduler`` picks an lr scheduler ("none", "lambda",
"onecycle", "cosine" (CosineAnnealingLR per epoch), "timm" (timm's CosineLRScheduler per step)).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_tl.callbacks.freezing import freeze_param_groups

N, SIZE = 32, 8


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UserNet(pl.LightningModule):
    def __init__(self, lr: float = 0.1, scheduler: str = "none") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            block(1, 6), block(6, 6), nn.Sequential(block(6, 6), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        )
        self.head = nn.Linear(6, 4)
        self.lr, self.scheduler = lr, scheduler
        self.losses: list[float] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(freeze_param_groups(self, lr=self.lr), momentum=0.9)  # the one line
        total = int(self.trainer.estimated_stepping_batches)
        if self.scheduler == "none":
            return optimizer
        if self.scheduler == "lambda":
            sched: Any = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
        elif self.scheduler == "onecycle":  # max_lr per group keeps the layer-wise ratios
            max_lr = [g["lr"] for g in optimizer.param_groups]
            sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
        elif self.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.trainer.max_epochs)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        elif self.scheduler == "timm":
            from timm.scheduler import CosineLRScheduler

            sched = CosineLRScheduler(optimizer, t_initial=total, warmup_t=2, warmup_lr_init=1e-3)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        else:
            raise ValueError(self.scheduler)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if self.scheduler == "timm":
            scheduler.step_update(self.global_step)  # timm counts updates; Lightning needs this hook for it
        else:
            scheduler.step()


def loader(batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 1, SIZE, SIZE, generator=g)
    y = torch.randint(0, 4, (N,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "max_epochs": 1,
    }
    kwargs.update(overrides)
    return kwargs


def bn_modules(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
