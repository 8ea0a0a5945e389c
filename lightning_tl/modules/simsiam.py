"""SimSiam as a LightningModule: one encoder, a predictor, a stop-gradient, no teacher and no negatives.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_tl.heads import SimSiamPredictionHead, SimSiamProjectionHead
from lightning_tl.losses import negative_cosine_loss
from lightning_tl.modules._ssl import encode_two_views
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule


class SimSiam(PretrainModule):
    """Self-supervised pre-training with SimSiam.

    Batches are ``(views, labels)`` with two (B, C, H, W) views (data ``views: SimCLRViews``, or any
    two-view recipe). Both views go through the same encoder f (backbone + projector) and predictor h; the
    loss is the paper's symmetrised negative cosine similarity ``D(p1, stopgrad(z2)) / 2 + D(p2,
    stopgrad(z1)) / 2`` (Eq. 3-4): the stop-gradient on the other view's projection takes the place of
    BYOL's momentum teacher, and there is no teacher here (nothing but the weights and the optimizer is
    stateful).

    Under DDP the loss is a mean over images, so the averaged gradient is the global batch's; batch norm
    in backbone and heads takes per-process statistics by design (the paper synchronises batch norm across
    devices; the Trainer's ``sync_batchnorm=True`` does that on GPUs).

    Overridable steps: :meth:`encode`, :meth:`project`, :meth:`predict`, :meth:`compute_loss`.

    Args:
        hidden_dim: the projector's hidden width (2048).
        output_dim: d, the projection and prediction width (2048).
        projector_layers: Linear layers of the projector (3 in the paper).
        predictor_hidden_dim: the predictor's bottleneck (512, a quarter of ``output_dim``).
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): SGD (momentum 0.9), weight decay 1e-4, no warm-up; ``lr=None``:
            0.05 x global batch / 256 (Sec. 4).
    """

    paper_optimizer = PaperOptimizer("sgd", weight_decay=1e-4, warmup_epochs=0.0)
    views_recipe = "SimCLRViews"
    lr_per_256 = 0.05  # lr=None: 0.05 x global batch / 256 (SimSiam's SGD setting, Sec. 4)

    def __init__(
        self,
        *,
        hidden_dim: int = 2048,
        output_dim: int = 2048,
        projector_layers: int = 3,
        predictor_hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        width = self.backbone.num_features
        self.projection_head = SimSiamProjectionHead(width, hidden_dim, output_dim, projector_layers)
        self.prediction_head = SimSiamPredictionHead(output_dim, predictor_hidden_dim, output_dim)

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> projection z (B, output_dim)."""
        return self.projection_head(h)

    def predict(self, z: Tensor) -> Tensor:
        """Projection (B, output_dim) -> prediction p (B, output_dim)."""
        return self.prediction_head(z)

    def compute_loss(self, predictions: list[Tensor], projections: list[Tensor]) -> Tensor:
        """``D(p1, z2) / 2 + D(p2, z1) / 2``, no gradient through the z's; one (B, D) tensor a view."""
        pairs = zip(predictions, reversed(projections), strict=True)
        return torch.stack([negative_cosine_loss(p, z) for p, z in pairs]).mean()

    # ---- Lightning hooks (and setup's data check, from PretrainModule) -----------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        _, h, labels = encode_two_views(self, batch)  # (2B, F)
        z = self.project(h)  # (2B, D)
        p = self.predict(z)  # (2B, D)
        loss = self.compute_loss(list(p.chunk(2)), list(z.chunk(2)))
        return self.training_output(loss, h.chunk(2)[0], labels)
