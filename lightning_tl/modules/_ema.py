"""What BYOL and DINO share: an EMA teacher that follows the student after every optimizer step.

MoCo's key encoder is built the same way (:func:`frozen_copy`) but follows its own momentum schedule.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020: after each training step the target (teacher)
parameters become ``xi <- tau xi + (1 - tau) theta`` (Sec. 3.1, Eq. 1), with ``tau`` rising from
``tau_base = 0.996`` to 1 along a cosine, ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2`` for step k
of K (Sec. 3.3). Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021,
Sec. 3.1 uses the same rule for its teacher. The update runs in the LightningModule's
``optimizer_step`` hook, so it happens once per optimizer step (also with gradient accumulation) and
``tau`` is indexed by the optimizer step; the teacher's weights are submodules, so they are in every
checkpoint, and ``tau`` is a function of ``global_step``: both continue exactly after a resume.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import lightning as L
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer
from typing_extensions import override

from lightning_tl.nn.momentum import check_momentum, cosine_momentum, update_momentum


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without gradients whose batch norms never update their own statistics.

    The copy's running statistics follow the student's by EMA (:func:`update_momentum` averages float
    buffers too); in training mode its batch norms normalise with the batch statistics, as the paper's
    target network does.
    """
    teacher = copy.deepcopy(module).requires_grad_(False)
    for m in teacher.modules():
        if isinstance(m, _BatchNorm):
            m.momentum = 0.0  # running stats come from update_momentum only
    return teacher


def check_teacher_momentum(base: float, final: float) -> None:
    """Both ends of the teacher's EMA schedule in [0, 1], named as the modules' settings."""
    check_momentum(base, "teacher_momentum")
    check_momentum(final, "final_teacher_momentum")


def teacher_momentum_at(step: int, total_steps: int | None, base: float, final: float) -> float:
    """The EMA rate after optimizer step ``step`` of ``total_steps``: cosine from ``base`` to ``final``."""
    if base == final:
        return base
    if total_steps is None:
        raise ValueError(
            "the teacher's cosine momentum schedule needs the run length; train with a Trainer "
            "(or set final_teacher_momentum equal to teacher_momentum for a constant rate)."
        )
    return cosine_momentum(step, max(1, total_steps), base, final)


def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], m: float) -> None:
    """``teacher = m * teacher + (1 - m) * student`` for every ``(student, teacher)`` pair."""
    for student, teacher in pairs:
        update_momentum(student, teacher, m)


class EMATeacher(L.LightningModule):
    """Mixin: a frozen teacher copy of student submodules, EMA-updated after every optimizer step.

    ``teacher_of`` maps each teacher attribute to the student attribute it copies
    (``{"teacher_backbone": "backbone", "teacher_head": "head"}``); the module sets
    ``teacher_momentum`` / ``final_teacher_momentum`` and calls :meth:`reset_teacher` at the end of
    ``__init__``. The rate after step k is :meth:`teacher_momentum_at` (a function of the step, so a
    resumed run continues it); the run length is ``_total_steps``, known once the optimizer is configured.
    """

    teacher_of: ClassVar[dict[str, str]]
    teacher_backbone: nn.Module  # the teachers of BYOL and DINO (a mixin user may name its own)
    teacher_head: nn.Module
    teacher_momentum: float
    final_teacher_momentum: float
    _total_steps: int | None = None

    def reset_teacher(self) -> None:
        """(Re)build the teacher as a frozen copy of the current student submodules."""
        for teacher, student in self.teacher_of.items():
            setattr(self, teacher, frozen_copy(getattr(self, student)))

    def teacher_momentum_at(self, step: int) -> float:
        """The teacher's EMA rate applied after optimizer step ``step``."""
        return teacher_momentum_at(
            step, self._total_steps, self.teacher_momentum, self.final_teacher_momentum
        )

    def log_teacher_momentum(self, batch_size: int) -> None:
        """Log this step's rate as ``teacher_momentum`` (when a Trainer gives the run length)."""
        if self._trainer is not None:
            self.log("teacher_momentum", self.teacher_momentum_at(self.global_step), batch_size=batch_size)

    @override
    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """The optimizer step, then the teacher's EMA update with the rate of this step (BYOL, Eq. 1)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        m = self.teacher_momentum_at(self.global_step)  # the step just taken (counted after this hook)
        ema_update([(getattr(self, s), getattr(self, t)) for t, s in self.teacher_of.items()], m)
