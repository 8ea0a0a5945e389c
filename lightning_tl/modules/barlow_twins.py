"""Barlow Twins as a LightningModule: the cross-correlation of two views' embeddings, driven to identity.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
ICML 2021.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from lightning_tl.heads import BarlowTwinsProjectionHead
from lightning_tl.losses import barlow_twins_loss
from lightning_tl.modules._pretrained import make_backbone
from lightning_tl.modules._ssl import LinearScaledSSL, check_training_args, embedding_pair_step
from lightning_tl.optim import OptimizerFactory


class BarlowTwins(LinearScaledSSL, L.LightningModule):
    """Self-supervised pre-training with Barlow Twins.

    Batches are ``(views, labels)`` with two (B, C, H, W) views (data ``views: BYOLViews``, or any
    two-view recipe). Both views go through one encoder (backbone + projector); the loss
    (:func:`~lightning_tl.losses.barlow_twins_loss`) standardises each embedding feature along the batch
    and pushes the (D, D) cross-correlation matrix of the two views to the identity: ``sum_i (1 - C_ii)^2
    + lambda_ sum_{i != j} C_ij^2`` (Eq. 1). No teacher, no predictor, no negatives.

    Under DDP (``gather_distributed``, default) the loss takes its means, variances and ``C`` over the
    global batch and its gradients are the global batch's: a 2-process run equals one process on the
    global batch. Batch norm inside backbone and projector takes per-process statistics by design
    (the Trainer's ``sync_batchnorm=True`` makes them global on GPUs).

    Overridable steps: :meth:`encode`, :meth:`project`, :meth:`compute_loss`.

    Args:
        backbone, backbone_kwargs, pretrained, small_input, in_channels, num_classes: as in
            :class:`~lightning_tl.modules.SimCLR`.
        hidden_dim: the projector's hidden width (8192 in the paper; scale down for tiny backbones).
        output_dim: embedding width D (8192).
        projector_layers: Linear layers of the projector (3).
        lambda_: weight of the off-diagonal terms (5e-3).
        gather_distributed: batch statistics over every rank under DDP (a per-rank loss otherwise).
        optimizer: a timm optimizer name or a callable on param groups (LARS in the paper).
        lr: learning rate; None = 0.2 x global batch / 256 (the paper's rate for weights; it trains
            biases and batch-norm parameters with 0.0048, here they share ``lr``).
        weight_decay: on weights with ndim >= 2 (1.5e-6).
        momentum: for SGD-type optimizers (0.9).
        warmup_epochs: linear warm-up before cosine decay (10 in the paper).
    """

    views_recipe = "BYOLViews"
    lr_per_256 = 0.2  # lr=None: 0.2 x global batch / 256 (Barlow Twins' LARS rate for weights)

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str | None = None,
        small_input: bool | None = None,
        in_channels: int = 3,
        num_classes: int | None = None,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        projector_layers: int = 3,
        lambda_: float = 5e-3,
        gather_distributed: bool = True,
        optimizer: str | OptimizerFactory = "lars",
        lr: float | None = None,
        weight_decay: float = 1.5e-6,
        momentum: float = 0.9,
        warmup_epochs: float = 10.0,
    ) -> None:
        super().__init__()
        if not lambda_ >= 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}; Barlow Twins uses 5e-3.")
        check_training_args("BarlowTwins", optimizer, lr, warmup_epochs, paper="lars")
        self.save_hyperparameters(ignore=["optimizer"] if callable(optimizer) else None)
        self.keep_optimizer_settings(optimizer, lr, weight_decay, momentum, warmup_epochs)
        self.lambda_, self.gather_distributed = lambda_, gather_distributed
        self.backbone = make_backbone(backbone, backbone_kwargs, pretrained, small_input, in_channels)
        width = self.backbone.num_features
        self.projection_head = BarlowTwinsProjectionHead(width, hidden_dim, output_dim, projector_layers)

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> embedding z (B, output_dim)."""
        return self.projection_head(h)

    def compute_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Barlow Twins' loss of the embeddings (B, D) of the two views, over the global batch."""
        return barlow_twins_loss(z1, z2, self.lambda_, gather=self.gather_distributed)

    # ---- Lightning hooks (and setup's data check, from LinearScaledSSL) -----------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return embedding_pair_step(self, batch)
