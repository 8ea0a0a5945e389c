"""Shared pieces of the domain-adaptation module tests (DANN, CDAN, MCC): a hand-checkable backbone, a
hand-made batch, and fits on digits -> digits-M that must not read target labels and must resume exactly."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn

from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule
from lightning_tl.datamodules.domain import UnlabelledImages


class TinyBackbone(nn.Module):
    """f = w . flatten(x): one feature, so every gradient can be written by hand."""

    num_features = 1

    def __init__(self, inputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))  # (B, 1)


#: A hand-made batch of 1x1 RGB images: 2 labelled source images and 3 target images.
X_S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]]).view(2, 3, 1, 1)
Y_S = torch.tensor([0, 1])
X_T = torch.tensor([[2.0, 0.0, -1.0], [1.0, 1.0, 1.0], [-0.5, 0.5, 0.0]]).view(3, 3, 1, 1)


class LabelsForbidden(UnlabelledImages):
    """A target train split whose labels must not be read."""

    def label(self, index: int) -> int:
        raise AssertionError("a target train label was read")


class Record(Callback):
    """Per training batch: (optimizer steps before it, reversal coefficient after it (0 without one), the
    param groups' lrs it used, its loss); stops the fit after ``stop`` optimizer steps."""

    def __init__(self, stop: int | None) -> None:
        self.stop = stop
        self.rows: list[tuple[int, float, tuple[float, ...], float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step  # before this batch's optimizer (and lr) step
        self._lrs = tuple(g["lr"] for g in trainer.optimizers[0].param_groups)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        coeff = float(pl_module.grl.coeff) if hasattr(pl_module, "grl") else 0.0
        self.rows.append((self._step, coeff, self._lrs, float(outputs["loss"])))
        if self.stop is not None and trainer.global_step >= self.stop:
            trainer.should_stop = True


def fit_adaptation(
    make: Callable[[], L.LightningModule],
    tmp_path: Path,
    stop: int | None = None,
    ckpt: str | None = None,
    *,
    total: int = 6,
    accumulate: int = 1,
    batch_size: int = 32,
    target_images: int = 200,
) -> list[tuple[int, float, tuple[float, ...], float]]:
    """Fit ``make()`` on digits -> digits-M (``target_images`` target train images, their labels
    forbidden) for ``total`` optimizer steps; checkpoints every ``stop`` steps when given. The rows."""
    L.seed_everything(3, verbose=False)
    data = DomainAdaptationDataModule(
        DigitsDataModule(rgb=True, batch_size=batch_size, seed=1),
        DigitsMDataModule(batch_size=batch_size, seed=1, train_subset=target_images),
    )
    data.setup("fit")
    splits = data.target._splits
    assert splits is not None
    splits["train"] = LabelsForbidden(splits["train"])  # type: ignore[assignment]
    record = Record(stop)
    callbacks: list[Callback] = [record]
    if stop is not None:
        callbacks.append(
            ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=stop, save_top_k=-1)
        )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=total,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=stop is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(make(), data, ckpt_path=ckpt)
    return record.rows


def assert_resumes_exactly(
    make: Callable[[], L.LightningModule], tmp_path: Path, stop: int = 3, **fit_kwargs: Any
) -> list[tuple[int, float, tuple[float, ...], float]]:
    """A fit stopped after ``stop`` steps plus its resumption equal the uninterrupted fit, row for row
    (coefficients, learning rates, losses); returns the uninterrupted fit's rows."""
    full = fit_adaptation(make, tmp_path, **fit_kwargs)
    batches = fit_kwargs.get("total", 6) * fit_kwargs.get("accumulate", 1)
    assert len(full) == batches and all(math.isfinite(loss) for *_, loss in full)
    head = fit_adaptation(make, tmp_path, stop=stop, **fit_kwargs)
    tail = fit_adaptation(make, tmp_path, ckpt=str(tmp_path / f"step={stop}.ckpt"), **fit_kwargs)
    assert head + tail == full
    return full
