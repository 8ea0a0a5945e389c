"""DINO as a LightningModule: self-distillation from an EMA teacher with centring, sharpening and multi-crop.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_tl.heads import DINOHead
from lightning_tl.losses import DINOLoss
from lightning_tl.modules._ema import EMATeacher, check_teacher_momentum
from lightning_tl.modules._pretrain import encode_by_size, split_views
from lightning_tl.modules._ssl import check_positive
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule

_TEMP_HINT = "DINO uses student_temp 0.1 and a teacher warming up from 0.04 to 0.07."


class DINO(PretrainModule, EMATeacher):
    """Self-supervised pre-training with DINO.

    Batches are ``(views, labels)``: ``num_global_views`` global views (all views of the first size, first
    in the list), then any number of smaller local views (multi-crop: data ``views: DINOViews`` with
    ``local_views: N``). The student (backbone + :class:`~lightning_tl.heads.DINOHead`) sees every view;
    the teacher, an EMA copy of backbone and head without gradients, sees the global views, and its
    forward is part of every training step. The loss (:class:`~lightning_tl.losses.DINOLoss`) is the
    cross-entropy between the teacher's centred, sharpened softmax (temperature ``tau_t``) and the
    student's (``student_temp``) over every (global teacher view, other student view) pair.

    Schedules, all functions of the epoch or optimizer step, so a resumed run continues them exactly:
    ``tau_t`` warms up linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_epochs`` (per epoch, as in the authors' code); the teacher's EMA rate rises
    from ``teacher_momentum`` to ``final_teacher_momentum`` along a cosine (applied after every optimizer
    step); the head's last layer gets no update during the first ``freeze_last_layer`` epochs (its
    gradients are dropped, so neither the optimizer nor weight decay moves it). The centre is a buffer
    of the loss (``criterion.center``, in every checkpoint), updated after every step from the teacher
    outputs of the global batch. Logged: ``train_loss``, ``teacher_temp``, ``teacher_momentum``.

    Under DDP the loss is a mean over images and the centre is updated from the global batch, so a
    2-process run equals one process on the global batch, except for batch norm (in a ResNet backbone,
    and in the head with ``head_batch_norm``), whose statistics are per process by design (the
    Trainer's ``sync_batchnorm=True`` makes them global on GPUs).

    Not here: the paper's weight-decay schedule (0.04 -> 0.4; ``weight_decay`` is constant) and
    gradient clipping (``Trainer(gradient_clip_val=3.0)`` does it).

    Overridable steps: :meth:`encode`, :meth:`student_forward`, :meth:`teacher_forward`,
    :meth:`compute_loss`, :meth:`teacher_momentum_at`.

    Args:
        hidden_dim, bottleneck_dim, output_dim, head_layers: the head's MLP width (2048), bottleneck
            (256), number of prototypes K (65536) and MLP layers (3); scale down for tiny backbones.
        head_batch_norm: batch norm in the head's MLP (off in the paper's ViT setting).
        norm_last_layer: fix the norms of the last layer's rows to 1 (the paper's default).
        num_global_views: global views per image (2); the batch is checked against it.
        teacher_temp: tau_t after the warm-up (0.07 with warm-up in the paper; 0.04 without).
        warmup_teacher_temp: tau_t at epoch 0 (0.04).
        warmup_teacher_temp_epochs: length of the tau_t warm-up in epochs (30; 0 for none).
        student_temp: tau_s (0.1).
        center_momentum: m of the centre's moving average (0.9).
        teacher_momentum: the teacher's EMA rate at the first step (0.996).
        final_teacher_momentum: the EMA rate at the end of training (1).
        freeze_last_layer: epochs during which the head's last layer is frozen (1).
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): AdamW, weight decay 0.04 (the start of the paper's schedule), 10
            warm-up epochs; ``lr=None``: 0.0005 x global batch / 256.
    """

    paper_optimizer = PaperOptimizer("adamw", weight_decay=0.04, warmup_epochs=10.0)
    views_recipe = "DINOViews"
    local_views = True
    lr_per_256 = 0.0005  # lr=None: 0.0005 x global batch / 256 (DINO's AdamW setting)
    teacher_of = {"teacher_backbone": "backbone", "teacher_head": "head"}

    def __init__(
        self,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        head_layers: int = 3,
        head_batch_norm: bool = False,
        norm_last_layer: bool = True,
        num_global_views: int = 2,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        teacher_momentum: float = 0.996,
        final_teacher_momentum: float = 1.0,
        freeze_last_layer: int = 1,
        **kwargs: Any,
    ) -> None:
        if num_global_views < 2:
            raise ValueError(
                f"num_global_views must be >= 2, got {num_global_views}: DINO's teacher sees the global "
                "views and each is the target of the others (the paper uses 2)."
            )
        check_positive(teacher_temp, "teacher_temp", _TEMP_HINT)
        check_positive(warmup_teacher_temp, "warmup_teacher_temp", _TEMP_HINT)
        check_positive(student_temp, "student_temp", _TEMP_HINT)
        if warmup_teacher_temp_epochs < 0:
            raise ValueError(
                f"warmup_teacher_temp_epochs must be >= 0, got {warmup_teacher_temp_epochs}; DINO uses 30."
            )
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}; DINO uses 0.9.")
        check_teacher_momentum(teacher_momentum, final_teacher_momentum)
        if freeze_last_layer < 0:
            raise ValueError(f"freeze_last_layer must be >= 0 epochs, got {freeze_last_layer}; DINO uses 1.")
        super().__init__(**kwargs)
        self.num_global_views = num_global_views
        self.teacher_momentum, self.final_teacher_momentum = teacher_momentum, final_teacher_momentum
        self.freeze_last_layer = freeze_last_layer
        self.head = DINOHead(
            self.backbone.num_features,
            hidden_dim,
            bottleneck_dim,
            output_dim,
            head_layers,
            batch_norm=head_batch_norm,
            norm_last_layer=norm_last_layer,
        )
        self.criterion = DINOLoss(
            output_dim,
            teacher_temp=teacher_temp,
            student_temp=student_temp,
            center_momentum=center_momentum,
            warmup_teacher_temp=warmup_teacher_temp,
            warmup_epochs=warmup_teacher_temp_epochs,
        )
        self.reset_teacher()  # teacher_backbone, teacher_head: frozen copies of backbone, head

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def student_forward(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        """All views, global first -> (features (V*B, F), head outputs (V*B, K)); one backbone call a size."""
        h = encode_by_size(self.encode, views)  # (V*B, F)
        return h, self.head(h)  # (V*B, K)

    @torch.no_grad()
    def teacher_forward(self, global_views: list[Tensor]) -> Tensor:
        """Global views -> the teacher's head outputs (G*B, K), no gradient."""
        return self.teacher_head(self.teacher_backbone(torch.cat(global_views)))

    def compute_loss(self, teacher_out: list[Tensor], student_out: list[Tensor]) -> Tensor:
        """DINO's loss at this epoch's tau_t, one (B, K) tensor per view; updates the centre in training."""
        return self.criterion(teacher_out, student_out, epoch=self.current_epoch)

    def count_global_views(self, views: list[Tensor]) -> int:
        """Check that the views of the first size are the first ``num_global_views``; return their count."""
        sizes = [tuple(v.shape[-2:]) for v in views]
        n_global = sum(s == sizes[0] for s in sizes)
        got = f"got view sizes {sizes}, {n_global} of the first size"
        fix = "data views: {class_path: lightning_tl.augment.DINOViews} makes 2 global and local small ones"
        if n_global < 2:
            raise ValueError(
                "DINO needs at least 2 global views (all views of the first size are global; the teacher "
                f"sees them and each is a target of the others); {got}. {fix}."
            )
        if n_global != self.num_global_views or len(set(sizes[:n_global])) > 1:
            raise ValueError(
                f"DINO expects num_global_views={self.num_global_views} global views first (all views of "
                f"the first size), then smaller local views; {got}. Set model num_global_views to the "
                f"data's number of global views and put them first ({fix})."
            )
        return n_global

    # ---- Lightning hooks (optimizer_step updates the teacher) --------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        views, labels = split_views(batch, "DINO")
        n_global = self.count_global_views(views)
        n = views[0].shape[0]
        h, student = self.student_forward(views)  # (V*B, F), (V*B, K)
        teacher = self.teacher_forward(views[:n_global])  # (G*B, K)
        loss = self.compute_loss(list(teacher.split(n)), list(student.split(n)))
        self.log("teacher_temp", self.criterion.teacher_temperature(self.current_epoch), batch_size=n)
        self.log_teacher_momentum(batch_size=n)
        return self.training_output(loss, h[:n], labels)

    def on_after_backward(self) -> None:
        """Drop the last layer's gradients during the first ``freeze_last_layer`` epochs (DINO's code)."""
        if self.current_epoch < self.freeze_last_layer:
            for p in self.head.last_layer.parameters():
                p.grad = None
