"""BYOL as a LightningModule: an online network with a predictor learns to predict an EMA teacher.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu,
Munos, Valko, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_tl.heads import BYOLProjectionHead
from lightning_tl.losses import negative_cosine_loss
from lightning_tl.modules._ema import EMATeacher, check_teacher_momentum
from lightning_tl.modules._ssl import encode_two_views
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule


class BYOL(PretrainModule, EMATeacher):
    """Self-supervised pre-training with BYOL.

    Batches are ``(views, labels)`` with two (B, C, H, W) views (data ``views: BYOLViews``, or any
    two-view recipe). Both views go through the online network (backbone, projector, predictor) and
    through the teacher ("target network"), an EMA copy of backbone and projector without gradients; the
    teacher's forward is part of every training step. The loss is the paper's symmetrised ``L + L~``, each
    term the normalised squared error ``2 - 2 cos(q(z_i), z'_j)`` between the online prediction of one
    view and the teacher's projection of the other. After every optimizer step the teacher moves towards
    the online weights with the rate ``tau`` rising from ``teacher_momentum`` (0.996) to
    ``final_teacher_momentum`` (1) along a cosine over the run (Sec. 3.3); ``tau`` is logged as
    ``teacher_momentum``.

    State that resumes exactly: the teacher is a submodule (in every checkpoint) and ``tau`` is a function
    of the optimizer step; RNG states are saved as in SimCLR.

    Under DDP the loss is a mean over images, so the averaged gradient is the global batch's. Batch norm
    (backbone, projector, predictor, teacher) takes per-process statistics by design; on GPUs the
    Trainer's ``sync_batchnorm=True`` makes them global.

    Overridable steps: :meth:`encode`, :meth:`project`, :meth:`predict`, :meth:`encode_teacher`,
    :meth:`compute_loss`, :meth:`teacher_momentum_at`.

    Args:
        hidden_dim: the projector's hidden width (4096 in the paper).
        output_dim: projection width (256).
        predictor_hidden_dim: the predictor's hidden width (4096, "the same architecture as g").
        teacher_momentum: tau_base, the EMA rate at the first step (0.996).
        final_teacher_momentum: tau at the end of training (1); equal to ``teacher_momentum`` for a
            constant rate.
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): LARS, weight decay 1.5e-6, 10 warm-up epochs; ``lr=None``: 0.2 x
            global batch / 256 (Sec. 3.3).
    """

    paper_optimizer = PaperOptimizer("lars", weight_decay=1.5e-6, warmup_epochs=10.0)
    views_recipe = "BYOLViews"
    lr_per_256 = 0.2  # lr=None: 0.2 x global batch / 256 (BYOL's LARS setting, Sec. 3.3)
    teacher_of = {"teacher_backbone": "backbone", "teacher_head": "projection_head"}

    def __init__(
        self,
        *,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        predictor_hidden_dim: int = 4096,
        teacher_momentum: float = 0.996,
        final_teacher_momentum: float = 1.0,
        **kwargs: Any,
    ) -> None:
        check_teacher_momentum(teacher_momentum, final_teacher_momentum)
        super().__init__(**kwargs)
        self.teacher_momentum, self.final_teacher_momentum = teacher_momentum, final_teacher_momentum
        self.projection_head = BYOLProjectionHead(self.backbone.num_features, hidden_dim, output_dim)
        self.prediction_head = BYOLProjectionHead(output_dim, predictor_hidden_dim, output_dim)
        self.reset_teacher()  # teacher_backbone, teacher_head: frozen copies of backbone, projection_head

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> online projection z (B, output_dim)."""
        return self.projection_head(h)

    def predict(self, z: Tensor) -> Tensor:
        """Online projection (B, output_dim) -> prediction q(z) (B, output_dim)."""
        return self.prediction_head(z)

    @torch.no_grad()
    def encode_teacher(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> the teacher's projection z' (B, output_dim), no gradient."""
        return self.teacher_head(self.teacher_backbone(x))

    def compute_loss(self, predictions: list[Tensor], targets: list[Tensor]) -> Tensor:
        """``sum_i 2 - 2 cos(predictions[i], targets[1 - i])``: each view's prediction, the other's target.

        ``predictions`` and ``targets`` hold one (B, D) tensor per view (two views).
        """
        pairs = zip(predictions, reversed(targets), strict=True)
        return torch.stack([2 + 2 * negative_cosine_loss(p, t) for p, t in pairs]).sum()

    # ---- Lightning hooks (and setup's data check; optimizer_step updates the teacher) ------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x, h, labels = encode_two_views(self, batch)  # (2B, F)
        p = self.predict(self.project(h))  # (2B, D)
        t = self.encode_teacher(x)  # (2B, D)
        loss = self.compute_loss(list(p.chunk(2)), list(t.chunk(2)))
        self.log_teacher_momentum(batch_size=len(labels))
        return self.training_output(loss, h.chunk(2)[0], labels)
