"""ImageClassifier: supervised fine-tuning of a (pre-trained) backbone with a new linear head.

Batches are ``(images (B, C, H, W), labels (B,))`` (our datamodules without a view recipe), or
``(images, soft targets (B, num_classes))`` when the datamodule mixes batches (mixup/CutMix). With a
:class:`~lightning_tl.callbacks.FreezeSchedule` on the trainer the optimizer is built from its
layer groups (frozen ones at lr 0, layer-wise lrs); without one every parameter trains.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from lightning_tl.augment import SeededBatch
from lightning_tl.heads import LinearHead
from lightning_tl.modules._optim import timm_optimizer
from lightning_tl.modules.finetune_module import FineTuneModule
from lightning_tl.optim import param_groups, provided_param_groups


class ImageClassifier(FineTuneModule):
    """A backbone from :func:`~lightning_tl.backbones.create_backbone` plus a new :class:`LinearHead`.

    Args:
        backbone: ``create_backbone`` name (``"resnet18"``, ``"timm/resnet26"``) or a module with
            ``num_features`` (see :class:`~lightning_tl.modules.BackboneModule`).
        num_classes: linked from the datamodule by the CLI.
        lr: base learning rate: the head's; under a FreezeSchedule lower groups get
            ``lr * lr_decay ** distance``.
        label_smoothing: cross-entropy label smoothing.
        **kwargs: the backbone and the rest of the optimizer (``backbone_kwargs``, ``pretrained``,
            ``small_input``, ``in_channels``, ``optimizer``, ``weight_decay``, ``momentum``,
            ``warmup_epochs``): see :class:`~lightning_tl.modules.FineTuneModule`.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        *,
        num_classes: int = 10,
        lr: float = 0.05,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        super().__init__(backbone=backbone, lr=lr, **kwargs)
        self.head = LinearHead(self.backbone.num_features, num_classes)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> logits (B, num_classes)."""
        return self.head(self.backbone(x))

    def _step(self, batch: Any, stage: str) -> Tensor:
        if isinstance(batch, SeededBatch):
            raise ValueError(
                "ImageClassifier got an un-mixed SeededBatch: mixup/CutMix/noise are applied by the "
                "datamodule's on_after_batch_transfer hook, which Lightning only calls when the datamodule "
                "is passed to the Trainer; use trainer.fit(model, datamodule=dm)."
            )
        x, y = batch
        logits = self(x)  # (B, num_classes)
        if y.ndim == 2 and y.shape != logits.shape:
            raise ValueError(
                f"soft targets must be (B, num_classes) = {tuple(logits.shape)}, got {tuple(y.shape)}"
            )
        # int labels (B,) or soft targets (B, K) from mixup/CutMix: cross_entropy takes both; with soft
        # targets it is -sum_k y_k log softmax(logits)_k (label smoothing mixes in the uniform target).
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        metric = getattr(self, f"{stage}_acc")
        metric(logits, y if y.ndim == 1 else y.argmax(dim=1))  # mixed targets: their dominant class
        n = x.shape[0]
        self.log(f"{stage}_loss", loss, prog_bar=stage == "train", sync_dist=stage != "train", batch_size=n)
        self.log(f"{stage}_acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def build_optimizer(self) -> Optimizer:
        """A timm optimizer over the FreezeSchedule's layer groups if the trainer has one, else all params.

        The trainer's callbacks are asked through :class:`~lightning_tl.optim.ParamGroupProvider`
        (FreezeSchedule is one), so this module imports no callback.
        """
        lr, weight_decay = self.base_lr(), self.weight_decay
        groups = provided_param_groups(self, lr, weight_decay)
        if groups is None:
            groups = param_groups(self, weight_decay)
        return timm_optimizer(groups, self.optimizer, lr, weight_decay, self.momentum)
