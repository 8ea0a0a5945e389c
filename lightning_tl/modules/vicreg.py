"""VICReg as a LightningModule: invariance between two views, variance and decorrelation within each.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_tl.heads import BarlowTwinsProjectionHead
from lightning_tl.losses import vicreg_loss
from lightning_tl.modules._ssl import embedding_pair_step
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule


class VICReg(PretrainModule):
    """Self-supervised pre-training with VICReg.

    Batches are ``(views, labels)`` with two (B, C, H, W) views (data ``views: BYOLViews``, or any
    two-view recipe). Both views go through one encoder (backbone + expander, the same shape as Barlow
    Twins' projector); the loss (:func:`~lightning_tl.losses.vicreg_loss`) weighs the mean squared
    distance of paired embeddings (``sim_weight``, lambda), a hinge keeping every feature's standard
    deviation along the batch at 1 (``var_weight``, mu) and the squared off-diagonal covariances
    (``cov_weight``, nu). No teacher, no predictor, no negatives.

    Under DDP (``gather_distributed``, default) the variance and covariance are taken over the global
    batch and the gradients are the global batch's: a 2-process run equals one process on the global
    batch. Batch norm inside backbone and expander takes per-process statistics by design (the
    Trainer's ``sync_batchnorm=True`` makes them global on GPUs).

    Overridable steps: :meth:`encode`, :meth:`project`, :meth:`compute_loss`.

    Args:
        hidden_dim: the expander's hidden width (8192 in the paper; scale down for tiny backbones).
        output_dim: embedding width D (8192).
        projector_layers: Linear layers of the expander (3).
        sim_weight, var_weight, cov_weight: lambda, mu, nu (25, 25, 1).
        gather_distributed: batch statistics over every rank under DDP (a per-rank loss otherwise).
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): LARS, weight decay 1e-6, 10 warm-up epochs; ``lr=None``: 0.2 x
            global batch / 256 (the paper's base rate, linearly scaled).
    """

    paper_optimizer = PaperOptimizer("lars", weight_decay=1e-6, warmup_epochs=10.0)
    views_recipe = "BYOLViews"
    lr_per_256 = 0.2  # lr=None: 0.2 x global batch / 256 (VICReg's LARS base rate, linearly scaled)

    def __init__(
        self,
        *,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        projector_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather_distributed: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("sim_weight", sim_weight),
            ("var_weight", var_weight),
            ("cov_weight", cov_weight),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}; VICReg uses 25, 25 and 1.")
        super().__init__(**kwargs)
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight
        self.gather_distributed = gather_distributed
        width = self.backbone.num_features
        self.projection_head = BarlowTwinsProjectionHead(width, hidden_dim, output_dim, projector_layers)

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> embedding z (B, output_dim)."""
        return self.projection_head(h)

    def compute_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """VICReg's loss of the embeddings (B, D) of the two views, over the global batch."""
        return vicreg_loss(
            z1, z2, self.sim_weight, self.var_weight, self.cov_weight, gather=self.gather_distributed
        )

    # ---- Lightning hooks (and setup's data check, from PretrainModule) -----------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return embedding_pair_step(self, batch)
