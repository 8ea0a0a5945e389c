"""ImageClassifier: supervised fine-tuning of a (pre-trained) backbone with a new linear head.

Batches are ``(images (B, C, H, W), labels (B,))`` (our datamodules with ``num_views: 0``), or
``(images, soft targets (B, num_classes))`` when the datamodule mixes batches (mixup/CutMix). With a
:class:`~lightning_tl.callbacks.FreezeSchedule` on the trainer the optimizer is built from its
layer groups (frozen ones at lr 0, layer-wise lrs); without one every parameter trains.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from lightning_tl.backbones import create_backbone
from lightning_tl.callbacks.freezing import find_freeze_schedule
from lightning_tl.datamodules.mixing import MixItem
from lightning_tl.heads import LinearHead
from lightning_tl.modules._pretrained import backbone_small_input, warn_data_mismatch
from lightning_tl.modules._rng import load_rng_states, save_rng_states
from lightning_tl.optim import param_groups, warmup_cosine_scheduler


class ImageClassifier(L.LightningModule):
    """A backbone from :func:`~lightning_tl.backbones.create_backbone` plus a new :class:`LinearHead`.

    Args:
        backbone: ``create_backbone`` name (``"resnet18"``, ``"timm/resnet26"``).
        pretrained: the backbone's weights, as ``create_backbone`` takes them: None / False random; True
            the hub weights of ``backbone`` (timm tag, e.g. ``"timm/resnet50.a1_in1k"``, or
            torchvision's DEFAULT); a torchvision weights name (``"IMAGENET1K_V2"``); or a local file
            (.safetensors, state dict, timm/torchvision checkpoint, Lightning .ckpt of ours), read
            without unpickling. At fit start a warning names any difference between the
            datamodule's mean/std / image size and the hub weights'.
            None warns: freezing a random backbone is rarely what you want.
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
        import timm.optim

        known = [str(n) for n in timm.optim.list_optimizers()]
        if optimizer.lower() not in known:
            raise ValueError(f"Unknown optimizer {optimizer!r}; timm knows: {', '.join(known)}.")
        self.save_hyperparameters()
        if pretrained is None:
            warnings.warn(
                "ImageClassifier: pretrained=None, the backbone is randomly initialised; pass "
                "pretrained=True (hub weights), a torchvision weights name or a local weight file to "
                "fine-tune pre-trained features.",
                stacklevel=2,
            )
        self.backbone = create_backbone(
            backbone,
            pretrained=pretrained,
            small_input=backbone_small_input(small_input, pretrained, True),
            in_chans=in_channels,
            model_kwargs=model_kwargs,
        )
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
        if isinstance(batch, MixItem):
            raise ValueError(
                "ImageClassifier got an un-mixed MixItem batch: mixup/CutMix/noise are applied by the "
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
        total = int(self.trainer.estimated_stepping_batches)
        batches = self.trainer.num_training_batches
        if self.warmup_epochs > 0 and not math.isfinite(batches):
            raise ValueError("warmup_epochs needs a train dataloader with a length; set warmup_epochs: 0.")
        per_epoch = math.ceil(batches / self.trainer.accumulate_grad_batches) if self.warmup_epochs else 0
        scheduler = warmup_cosine_scheduler(optimizer, round(self.warmup_epochs * per_epoch), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer(self) -> Optimizer:
        """A timm optimizer over the FreezeSchedule's layer groups if the trainer has one, else all params."""
        hp: Any = self.hparams
        freeze = find_freeze_schedule(self)
        if freeze is not None:
            groups = freeze.param_groups(self, hp.lr, hp.weight_decay)
        else:
            groups = param_groups(self, hp.weight_decay)
        kwargs = {"momentum": hp.momentum} if hp.optimizer.lower() in {"sgd", "lars", "momentum"} else {}
        import timm.optim

        return timm.optim.create_optimizer_v2(
            groups, opt=hp.optimizer, lr=hp.lr, weight_decay=hp.weight_decay, **kwargs
        )

    def on_fit_start(self) -> None:
        """Warn when the datamodule's normalisation or image size differ from the pretrained weights'."""
        warn_data_mismatch(self, getattr(self.backbone, "data_config", None))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_rng_states(checkpoint)
