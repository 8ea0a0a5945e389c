"""Barlow Twins as a LightningModule: the cross-correlation of two views' embeddings, driven to identity.

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
ICML 2021.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_tl.heads import BarlowTwinsProjectionHead
from lightning_tl.losses import barlow_twins_loss
from lightning_tl.modules._ssl import embedding_pair_step
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule


class BarlowTwins(PretrainModule):
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
        hidden_dim: the projector's hidden width (8192 in the paper; scale down for tiny backbones).
        output_dim: embedding width D (8192).
        projector_layers: Linear layers of the projector (3).
        lambda_: weight of the off-diagonal terms (5e-3).
        gather_distributed: batch statistics over every rank under DDP (a per-rank loss otherwise).
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): LARS, weight decay 1.5e-6, 10 warm-up epochs; ``lr=None``: 0.2 x
            global batch / 256 (the paper's rate for weights; it trains biases and batch-norm parameters with
            0.0048, here they share ``lr``).
    """

    paper_optimizer = PaperOptimizer("lars", weight_decay=1.5e-6, warmup_epochs=10.0)
    views_recipe = "BYOLViews"
    lr_per_256 = 0.2  # lr=None: 0.2 x global batch / 256 (Barlow Twins' LARS rate for weights)

    def __init__(
        self,
        *,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        projector_layers: int = 3,
        lambda_: float = 5e-3,
        gather_distributed: bool = True,
        **kwargs: Any,
    ) -> None:
        if not lambda_ >= 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}; Barlow Twins uses 5e-3.")
        super().__init__(**kwargs)
        self.lambda_, self.gather_distributed = lambda_, gather_distributed
        width = self.backbone.num_features
        self.projection_head = BarlowTwinsProjectionHead(width, hidden_dim, output_dim, projector_layers)

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> embedding z (B, output_dim)."""
        return self.projection_head(h)

    def compute_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Barlow Twins' loss of the embeddings (B, D) of the two views, over the global batch."""
        return barlow_twins_loss(z1, z2, self.lambda_, gather=self.gather_distributed)

    # ---- Lightning hooks (and setup's data check, from PretrainModule) -----------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return embedding_pair_step(self, batch)
