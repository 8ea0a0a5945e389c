"""Tiny stand-ins for the module/datamodule contract the callbacks rely on (scikit-learn digits).

- ``DigitsStandIn``: ``num_classes``, ``labelled_dataset(split)`` with (x (1, 8, 8) float, y int) items,
  train/val loaders; ``shard=True`` gives each rank a ``rank::world_size`` shard (no padding), as the
  library's datamodules do under DDP.
- ``EncoderStandIn``: ``encode(x) -> (B, D)``; ``training_step`` returns loss/features/labels and
  ``validation_step`` features/labels. With ``lr=0`` the encoder never changes.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from lightning_tl.distributed import rank, world_size

N_TRAIN = 1280  # 20 batches of 64; the remaining 517 digits are the val split


class DigitsStandIn(pl.LightningDataModule):
    num_classes = 10

    def __init__(self, batch_size: int = 64, shard: bool = False, unlabelled_every: int = 0) -> None:
        super().__init__()
        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8)
        x = (x - x.mean()) / x.std()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        x, y = x[order], torch.tensor(y)[order]
        self.splits = {
            "train": TensorDataset(x[:N_TRAIN], y[:N_TRAIN]),
            "val": TensorDataset(x[N_TRAIN:], y[N_TRAIN:]),
        }
        y_train = y[:N_TRAIN].clone()
        if unlabelled_every:
            y_train[::unlabelled_every] = -1
        self.train_set = TensorDataset(x[:N_TRAIN], y_train)
        self.batch_size = batch_size
        self.shard = shard

    def labelled_dataset(self, split: str) -> Dataset:
        return self.splits[split]

    def _loader(self, dataset: Dataset) -> DataLoader:
        if self.shard:  # Trainer(use_distributed_sampler=False)
            dataset = Subset(dataset, range(rank(), len(dataset), world_size()))  # type: ignore[arg-type]
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits["val"])


class EncoderStandIn(pl.LightningModule):
    """Random MLP encoder 64 -> 32 (optionally with dropout) trained by a dummy loss at rate ``lr``."""

    def __init__(self, lr: float = 0.0, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 32)
        )
        self.lr = lr

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)  # (B, 32)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        features = self.encode(x)
        loss = (features - 1).pow(2).mean()
        return {"loss": loss, "features": features.detach(), "labels": y}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return {"features": self.encode(x), "labels": y}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Fast, quiet CPU Trainer settings."""
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    kwargs.update(overrides)
    return kwargs
