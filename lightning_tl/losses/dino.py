"""DINO: self-distillation with a centred, sharpened teacher; the centre and the temperature schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.losses._checks import check_positive, full_precision, upcast

_TEMP_HINT = "DINO uses teacher_temp 0.04-0.07 (warm-up from 0.04) and student_temp 0.1."


def _check_views(teacher_out: Sequence[Tensor], student_out: Sequence[Tensor]) -> tuple[int, int]:
    """Validate the view lists; return (N, K)."""
    if len(teacher_out) < 2:
        raise ValueError(
            f"teacher_out must hold at least 2 views (DINO's teacher sees the 2 global crops), "
            f"got {len(teacher_out)}; pass a list of (N, K) tensors, one per global view."
        )
    if len(student_out) < len(teacher_out):
        raise ValueError(
            f"student_out must hold the {len(teacher_out)} teacher (global) views first, then any local "
            f"views; got {len(student_out)} student views for {len(teacher_out)} teacher views."
        )
    shape = tuple(teacher_out[0].shape)
    for name, views in (("teacher_out", teacher_out), ("student_out", student_out)):
        for i, view in enumerate(views):
            if view.ndim != 2 or tuple(view.shape) != shape or shape[0] < 1:
                raise ValueError(
                    f"every view must have the same shape (N, K) with N >= 1; {name}[{i}] has "
                    f"{tuple(view.shape)}, teacher_out[0] has {shape}. Local crops are the same "
                    "images, so N matches; K is the head's output dimension."
                )
    return shape[0], shape[1]


def _check_center(center: Tensor, k: int) -> None:
    if tuple(center.shape) not in ((k,), (1, k)):
        raise ValueError(
            f"center must have shape (K,) or (1, K) with K={k} (the head output), got {tuple(center.shape)}."
        )


def dino_loss(
    teacher_out: Sequence[Tensor],
    student_out: Sequence[Tensor],
    center: Tensor,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
) -> Tensor:
    """DINO's cross-entropy between the centred, sharpened teacher and the student, over view pairs.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, Eq. 2-3
    and Algorithm 1: the teacher's distribution ``P_t = softmax((g_t - c) / tau_t)`` (centred by
    ``c`` and sharpened by a low ``tau_t``, no gradient), the student's ``P_s = softmax(g_s / tau_s)``,
    and the loss ``H(P_t, P_s) = -sum_k P_t,k log P_s,k`` over every pair of teacher view i (a
    global crop) and student view j (global or local crop) with ``i != j``, averaged over the batch
    and over the ``G * V - G`` pairs (G teacher views, V student views). With 2 views this is
    Algorithm 1's ``H(t1, s2) / 2 + H(t2, s1) / 2``.

    The loss looks at each image alone (the centre is its only batch statistic, see
    :func:`update_dino_center`), so under DDP each rank returns the loss of its own rows; their
    mean is the global loss and DDP's gradient averaging gives the global-batch gradient.

    Half-precision outputs are scored in float32, with autocast off for the pairwise sums.

    Args:
        teacher_out: G >= 2 tensors (N, K), the teacher head's outputs on the global views.
        student_out: V >= G tensors (N, K), the student head's outputs: the same G global views
            in the same order, then the local views. ``student_out[i]`` and ``teacher_out[i]``
            are the same crop, so that pair is skipped.
        center: (K,) or (1, K) running mean of the teacher outputs (a constant here).
        teacher_temp: tau_t > 0 (0.04, warmed up to 0.07 in longer runs; see
            :func:`dino_teacher_temperature`).
        student_temp: tau_s > 0 (0.1 in the paper).

    Returns:
        Scalar loss.

    Example::

        >>> views = [torch.zeros(3, 4), torch.zeros(3, 4)]  # uniform teacher and student
        >>> round(float(dino_loss(views, views, torch.zeros(4))), 4)  # log K
        1.3863
    """
    _, k = _check_views(teacher_out, student_out)
    _check_center(center, k)
    check_positive(teacher_temp, "teacher_temp", _TEMP_HINT)
    check_positive(student_temp, "student_temp", _TEMP_HINT)
    (student,) = upcast(torch.stack(list(student_out)))  # (V, N, K)
    with torch.no_grad():
        (teacher,) = upcast(torch.stack([t.detach() for t in teacher_out]))  # (G, N, K)
        centred = teacher.to(student.dtype) - center.detach().reshape(1, 1, k).to(student.dtype)  # (G, N, K)
        probs = F.softmax(centred / teacher_temp, dim=-1)  # (G, N, K)
    log_probs = F.log_softmax(student / student_temp, dim=-1)  # (V, N, K)
    g, v, n = probs.shape[0], log_probs.shape[0], probs.shape[1]
    with full_precision(student):
        cross_entropy = -torch.einsum("gnk,vnk->gv", probs, log_probs) / n  # (G, V), batch means
    same_view = torch.eye(g, v, dtype=torch.bool, device=cross_entropy.device)  # (G, V)
    return cross_entropy.masked_fill(same_view, 0.0).sum() / (g * v - g)


@torch.no_grad()
def update_dino_center(center: Tensor, teacher_out: Sequence[Tensor], momentum: float = 0.9) -> Tensor:
    """The centre's exponential moving average over the teacher outputs of the global batch.

    Caron et al. 2021, Eq. 4: ``c <- m c + (1 - m) mean_b g_t(x_b)`` with m = 0.9, the mean taken
    over every teacher view of every image of the global batch: the per-rank sums and row counts
    are summed over ranks (one all-reduce; a no-op without a process group), so every rank gets
    the same centre, and uneven per-rank batches are weighted by their sizes. Pure: returns the
    new centre, which the caller stores (:class:`DINOLoss` keeps it in a buffer).

    Args:
        center: (K,) or (1, K) current centre.
        teacher_out: G >= 1 tensors (N, K), the teacher outputs of this step (global views).
        momentum: m in [0, 1]; 0.9 in the paper (1 freezes the centre, 0 takes the batch mean).

    Returns:
        The new centre, with the shape and dtype of ``center``.

    Example::

        >>> update_dino_center(torch.zeros(2), [torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, 5.0]])])
        tensor([0.2000, 0.4000])
    """
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}; DINO uses 0.9.")
    if len(teacher_out) < 1:
        raise ValueError("teacher_out must hold at least one (N, K) view to update the centre from.")
    k = center.shape[-1] if center.ndim > 0 else 0
    _check_center(center, k)
    for i, view in enumerate(teacher_out):
        if view.ndim != 2 or view.shape[1] != k:
            raise ValueError(
                f"teacher_out[{i}] must have shape (N, {k}) to match center, got {tuple(view.shape)}."
            )
    (teacher,) = upcast(torch.cat([t.detach() for t in teacher_out]))  # (G*N, K)
    rows = torch.full((1,), teacher.shape[0], dtype=teacher.dtype, device=teacher.device)
    totals = dist.all_reduce_sum(torch.cat([teacher.sum(dim=0), rows]))  # (K + 1,): sums, then row count
    batch_center = totals[:k] / totals[k]  # (K,)
    return momentum * center + (1 - momentum) * batch_center.reshape(center.shape).to(center.dtype)


def dino_teacher_temperature(
    epoch: float, teacher_temp: float = 0.04, warmup_teacher_temp: float = 0.04, warmup_epochs: int = 0
) -> float:
    """The teacher temperature at ``epoch``: a linear warm-up, then constant.

    Caron et al. 2021, Sec. 3.1 and Appendix: "a linear warm-up for tau_t from 0.04 to 0.07 during
    the first 30 epochs". As in the authors' code the warm-up takes ``warmup_epochs`` evenly spaced
    values from ``warmup_teacher_temp`` (epoch 0) to ``teacher_temp`` (epoch ``warmup_epochs - 1``),
    and ``teacher_temp`` from then on; a fractional epoch interpolates (per-step schedules).

    Args:
        epoch: the current epoch, >= 0 (0-based, Lightning's ``current_epoch``).
        teacher_temp: tau_t > 0 after the warm-up.
        warmup_teacher_temp: tau_t > 0 at epoch 0.
        warmup_epochs: length of the warm-up, >= 0 (0: no warm-up).

    Example::

        >>> [round(dino_teacher_temperature(e, 0.07, 0.04, warmup_epochs=4), 3) for e in range(5)]
        [0.04, 0.05, 0.06, 0.07, 0.07]
    """
    check_positive(teacher_temp, "teacher_temp", _TEMP_HINT)
    check_positive(warmup_teacher_temp, "warmup_teacher_temp", _TEMP_HINT)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}; DINO warms up for 30 (0: none).")
    if not epoch >= 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    if epoch >= warmup_epochs:
        return teacher_temp
    if warmup_epochs == 1:  # a one-value warm-up: epoch 0 only
        return warmup_teacher_temp
    fraction = min(epoch / (warmup_epochs - 1), 1.0)
    return warmup_teacher_temp + (teacher_temp - warmup_teacher_temp) * fraction


class DINOLoss(nn.Module):
    """:func:`dino_loss` with its centre (a buffer, so it is in the checkpoint) and temperature schedule.

    ``forward`` scores the views against the current centre, then (in training mode) moves the
    centre towards the global batch's teacher mean with :func:`update_dino_center`, as the
    authors' code does; in eval mode the centre is left alone.

    Args:
        out_dim: K, the DINO head's output dimension (65536 in the paper).
        teacher_temp: tau_t after the warm-up (0.04; 0.07 with a warm-up).
        student_temp: tau_s (0.1).
        center_momentum: m of the centre's moving average (0.9).
        warmup_teacher_temp: tau_t at epoch 0; None: ``teacher_temp`` (no warm-up).
        warmup_epochs: length of the linear warm-up (30 in the paper's long runs; 0: none).

    Example::

        >>> loss_fn = DINOLoss(out_dim=4)
        >>> views = [torch.zeros(3, 4), torch.ones(3, 4)]
        >>> round(float(loss_fn(views, views, epoch=0)), 4), loss_fn.center
        (1.3863, tensor([[0.0500, 0.0500, 0.0500, 0.0500]]))
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        warmup_teacher_temp: float | None = None,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1 (the head's output dimension K), got {out_dim}.")
        if warmup_teacher_temp is None:
            warmup_teacher_temp = teacher_temp
        dino_teacher_temperature(0, teacher_temp, warmup_teacher_temp, warmup_epochs)  # validates them
        check_positive(student_temp, "student_temp", _TEMP_HINT)
        if not 0 <= center_momentum <= 1:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}; DINO uses 0.9.")
        self.out_dim = out_dim
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_epochs = warmup_epochs
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: float | None = None) -> float:
        """tau_t at ``epoch``; ``epoch`` may be None only without a warm-up."""
        if epoch is None:
            if self.warmup_epochs > 0:
                raise ValueError(
                    f"epoch is needed: the teacher temperature warms up over {self.warmup_epochs} epochs; "
                    "pass epoch=self.current_epoch."
                )
            return self.teacher_temp
        return dino_teacher_temperature(
            epoch, self.teacher_temp, self.warmup_teacher_temp, self.warmup_epochs
        )

    def forward(
        self, teacher_out: Sequence[Tensor], student_out: Sequence[Tensor], epoch: float | None = None
    ) -> Tensor:
        loss = dino_loss(
            teacher_out, student_out, self.center, self.teacher_temperature(epoch), self.student_temp
        )
        if self.training:
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Tensor]) -> None:
        """Move the centre buffer towards the global batch's teacher mean (in place)."""
        self.center.copy_(update_dino_center(self.center, teacher_out, self.center_momentum))

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, teacher_temp={self.teacher_temp}, student_temp={self.student_temp}, "
            f"center_momentum={self.center_momentum}, warmup_teacher_temp={self.warmup_teacher_temp}, "
            f"warmup_epochs={self.warmup_epochs}"
        )
