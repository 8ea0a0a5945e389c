"""What the pre-training modules (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg, DINO) share about
their batches: multi-view batches checked and encoded, and evaluation steps that hand features to the
callbacks.

Plain functions, and one small mixin (:class:`FeatureSteps`) for the Lightning hooks they all implement
the same way; their optimizers come from :mod:`lightning_tl.modules._optim`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_tl.augment import SeededBatch
from lightning_tl.backbones import Backbone


def check_not_raw_views(batch: Any, method: str) -> None:
    """Raise a clear error when a batch still holds the uint8 images of on-device views."""
    if isinstance(batch, SeededBatch):
        raise ValueError(
            f"{method} got raw uint8 images (a SeededBatch): their views are made by the datamodule's "
            "on_after_batch_transfer hook, which Lightning only calls when the datamodule is passed to "
            "the Trainer; use trainer.fit(model, datamodule=dm), or set the view recipe's "
            "on_device: false."
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
            f"got {type(batch).__name__}. Give the datamodule a view recipe, e.g. views: SimCLRViews."
        )
    views, labels = batch
    if len(views) < 2 or (exactly is not None and len(views) != exactly):
        raise ValueError(
            f"{method} uses {wanted} views per image, got {len(views)}; set the view recipe's num_views: "
            f"{exactly or 2}."
        )
    shapes = [tuple(v.shape) for v in views]
    if any(s[:2] != shapes[0][:2] for s in shapes) or (exactly is not None and len(set(shapes)) > 1):
        raise ValueError(f"{method}'s views must hold the same images in one shape, got {shapes}.")
    return list(views), labels


def encode_by_size(encode: Callable[[Tensor], Tensor], views: list[Tensor]) -> Tensor:
    """Views (each (B, C, H_v, W_v)) -> features (V*B, F) in view order, one ``encode`` call per size.

    Views of one size pass the backbone together (multi-crop: the global views, then the local ones), so
    batch norm takes its statistics over all views of that size (the papers' setting for two views).
    """
    shapes = list(dict.fromkeys(tuple(v.shape) for v in views))
    if len(shapes) == 1:
        return encode(torch.cat(views))  # (V*B, F)
    features: list[Tensor | None] = [None] * len(views)
    for shape in shapes:
        members = [i for i, v in enumerate(views) if tuple(v.shape) == shape]
        h = encode(torch.cat([views[i] for i in members]))  # (V_s*B, F)
        for i, part in zip(members, h.split(views[0].shape[0]), strict=True):
            features[i] = part
    return torch.cat([f for f in features if f is not None])  # (V*B, F)


class FeatureSteps(L.LightningModule):
    """Evaluation steps and training-step output of a pre-training module.

    :meth:`encode` (the backbone by default) gives the representation; ``forward`` is :meth:`encode`.
    Validation, test and predict batches ``(x, labels)`` yield ``{"features", "labels"}`` for the
    evaluation callbacks (and ``lightning-tl predict`` exports them); a training step ends with
    :meth:`training_output`. Mixed in first:
    ``class PretrainModule(FeatureSteps, WarmupCosineOptimizer, BackboneModule)``.
    """

    backbone: Backbone

    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> representation (B, F) of the backbone: what downstream tasks use."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Representation of images (B, C, H, W) -> (B, F)."""
        return self.encode(x)

    def training_output(self, loss: Tensor, features: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Log ``train_loss``; return the loss with the first view's features (B, F) (detached) and the
        labels (B,), which the online evaluation callbacks read."""
        n = features.shape[0]
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        return {"loss": loss, "features": features.detach(), "labels": labels}

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
