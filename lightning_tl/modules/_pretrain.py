"""Pieces shared by the pre-training modules (SimCLR, MoCo): optimizer, schedule, batch checks.

Plain functions on a LightningModule, so a module composes them instead of inheriting a base class.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_tl import distributed as dist
from lightning_tl.datamodules.datasets import RawViews
from lightning_tl.modules._rng import load_rng_states, save_rng_states
from lightning_tl.optim import OptimizerFactory, create_optimizer, param_groups, warmup_cosine_scheduler


def build_optimizer(
    module: L.LightningModule,
    optimizer: str | OptimizerFactory,
    lr: float,
    weight_decay: float,
    momentum: float,
) -> Optimizer:
    """``optimizer`` (a timm name or a callable on param groups) over the trainable parameters of
    ``module``, without weight decay on 1-D ones; parameters with ``requires_grad=False`` (momentum
    encoders) are left out."""
    if callable(optimizer):
        return optimizer(param_groups(module, weight_decay))
    return create_optimizer(module, optimizer, lr, weight_decay, momentum)


def build_warmup_cosine(module: L.LightningModule, optimizer: Optimizer, warmup_epochs: float) -> LambdaLR:
    """Per-step linear warm-up of ``warmup_epochs`` (counted in optimizer steps) then cosine decay."""
    trainer = module.trainer
    total = int(trainer.estimated_stepping_batches)  # also sizes the train dataloader
    batches = trainer.num_training_batches
    if warmup_epochs > 0 and not math.isfinite(batches):
        raise ValueError("warmup_epochs needs a train dataloader with a length; set warmup_epochs: 0.")
    steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if warmup_epochs else 0
    return warmup_cosine_scheduler(optimizer, round(warmup_epochs * steps_per_epoch), total)


def global_batch_size(module: L.LightningModule) -> int | None:
    """Datamodule ``batch_size`` x processes x gradient accumulation, or None without a batch size."""
    trainer = module.trainer
    batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch is None:
        return None
    return int(batch) * dist.world_size() * trainer.accumulate_grad_batches


def check_not_raw_views(batch: Any, method: str) -> None:
    """Raise a clear error when a batch still holds the uint8 images of on-device views."""
    if isinstance(batch, RawViews):
        raise ValueError(
            f"{method} got raw uint8 images (RawViews): their views are made by the datamodule's "
            "on_after_batch_transfer hook, which Lightning only calls when the datamodule is passed to "
            "the Trainer; use trainer.fit(model, datamodule=dm), or set the datamodule's "
            "augment_on_device: false."
        )


def split_views(batch: Any, method: str, exactly: int | None = None) -> tuple[list[Tensor], Tensor]:
    """``(views, labels)`` -> (list of views of the same images, labels), checked for ``method``.

    At least two views, all with the same batch and channels (sizes may differ: multi-crop); with
    ``exactly`` set, that many views of one shape.
    """
    check_not_raw_views(batch, method)
    wanted = f"exactly {exactly}" if exactly is not None else ">= 2"
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], (tuple, list))):
        raise ValueError(
            f"{method} expects batches (views, labels) where views is a list of {wanted} image tensors; "
            f"got {type(batch).__name__}. Set the datamodule's num_views: {exactly or 2}."
        )
    views, labels = batch
    if len(views) < 2 or (exactly is not None and len(views) != exactly):
        raise ValueError(
            f"{method} uses {wanted} views per image, got {len(views)}; set num_views: {exactly or 2}."
        )
    shapes = [tuple(v.shape) for v in views]
    if any(s[:2] != shapes[0][:2] for s in shapes) or (exactly is not None and len(set(shapes)) > 1):
        raise ValueError(f"{method}'s views must hold the same images in one shape, got {shapes}.")
    return list(views), labels


class FeatureSteps:
    """Evaluation steps and checkpoint hooks of a pre-training module with an ``encode`` method.

    Validation, test and predict batches ``(x, labels)`` yield ``{"features", "labels"}`` for the
    evaluation callbacks (and ``lightning-tl predict`` exports them); every checkpoint carries the RNG
    states of all ranks so a resumed run draws the same random numbers. Mixed in before
    ``LightningModule``: ``class SimCLR(FeatureSteps, L.LightningModule)``.
    """

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define encode(x) -> features")

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Features of a supervised batch ``(x, labels)`` for evaluation callbacks."""
        x, labels = batch
        return {"features": self.encode(x), "labels": labels}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """As :meth:`validation_step`, on the test split."""
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Representations of ``(x, labels)`` batches: ``lightning-tl predict`` exports features."""
        return self.validation_step(batch, batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_rng_states(checkpoint)
