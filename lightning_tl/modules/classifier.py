"""ImageClassifier: supervised fine-tuning of a (pre-trained) backbone with a new linear head.

Batches are ``(images (B, C, H, W), labels (B,))`` (our datamodules without a view recipe), or
``(images, soft targets (B, num_classes))`` when the datamodule mixes batches (mixup/CutMix). With a
:class:`~lightning_tl.callbacks.FreezeSchedule` on the trainer the optimizer is built from its
layer groups (frozen ones at lr 0, layer-wise lrs); without one every parameter trains.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from lightning_tl.augment import SeededBatch
from lightning_tl.heads import LinearHead
from lightning_tl.modules._optim import build_warmup_cosine, check_optimizer_name, timm_optimizer
from lightning_tl.modules._pretrained import DataMismatchCheck, make_backbone, warn_random_backbone
from lightning_tl.modules._rng import RNGCheckpoint
from lightning_tl.optim import param_groups, provided_param_groups


class ImageClassifier(DataMismatchCheck, RNGCheckpoint, L.LightningModule):
    """A backbone from :func:`~lightning_tl.backbones.create_backbone` plus a new :class:`LinearHead`.

    Args:
        backbone: ``create_backbone`` name (``"resnet18"``, ``"timm/resnet26"``).
        pretrained: the backbone's weights, as in :class:`~lightning_tl.modules.PretrainModule`: None / False
            random, True the hub weights of ``backbone``, a torchvision weights name or a local file; at
            fit start a warning names data that does not fit hub weights. None also warns: freezing a
            random backbone is rarely what you want.
        small_input: 3x3 stride-1 stem without max-pool, for 8-32 px images. None: True without
            weights; with weights, what they need (hub weights: False; a local file: its own stem).
        in_channels, num_classes: linked from the datamodule by the CLI.
        optimizer: a timm optimizer name (``"sgd"``, ``"adamw"``, ``"lars"``...).
        lr: base learning rate: the head's; under a FreezeSchedule lower groups get
            ``lr * lr_decay ** distance``.
        weight_decay: on weights with ndim >= 2 only.
        momentum: for SGD-type optimizers.
        warmup_epochs: linear warm-up before a per-step cosine decay to 0; may be fractional.
        label_smoothing: cross-entropy label smoothing.
        model_kwargs: extra constructor arguments of the backbone (see ``create_backbone``).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool | str | None = None,
        small_input: bool | None = None,
        in_channels: int = 3,
        num_classes: int = 10,
        optimizer: str = "sgd",
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        warmup_epochs: float = 0.0,
        label_smoothing: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        check_optimizer_name(optimizer)
        self.save_hyperparameters()
        if pretrained is None:
            warn_random_backbone("ImageClassifier", "backbone", "fine-tune")
        self.backbone = make_backbone(backbone, model_kwargs, pretrained, small_input, in_channels)
        self.head = LinearHead(self.backbone.num_features, num_classes)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.warmup_epochs = warmup_epochs
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

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        scheduler = build_warmup_cosine(self, optimizer, self.warmup_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer(self) -> Optimizer:
        """A timm optimizer over the FreezeSchedule's layer groups if the trainer has one, else all params.

        The trainer's callbacks are asked through :class:`~lightning_tl.optim.ParamGroupProvider`
        (FreezeSchedule is one), so this module imports no callback.
        """
        hp: Any = self.hparams
        groups = provided_param_groups(self, hp.lr, hp.weight_decay)
        if groups is None:
            groups = param_groups(self, hp.weight_decay)
        return timm_optimizer(groups, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
