"""MCC: source cross-entropy plus Minimum Class Confusion on the target predictions.

Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020. The
loss on unlabelled target images is :func:`~lightning_tl.losses.mcc_loss`, the off-diagonal mass of
an entropy-weighted, row-normalised class correlation matrix of temperature-scaled predictions; it
works alone (the paper's main method: ``L_CE(source) + mu L_MCC(target)``) and as a
regulariser of adversarial methods (its DANN + MCC and CDAN + MCC rows).

The paper starts from an ImageNet-pretrained backbone whose source classifier is already confident
on the target; from scratch the first target predictions are near-uniform and the loss sharpens
them into arbitrary clusters. ``mcc_warmup`` and ``mcc_rampup`` give the analogue of that start:
source only first, then the MCC weight rising linearly (:func:`mcc_weight_factor`). On digits ->
digits-M with the DANN paper's small CNN, MCC with or without the warm start only tied source only
(BENCHMARKS.md, "Domain adaptation"): the source model is right on under half the target, and MCC
makes those predictions confident, not correct.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from lightning_tl.losses import mcc_loss
from lightning_tl.modules.cdan import CDAN


def mcc_weight_factor(progress: float, warmup: float = 0.0, rampup: float = 0.0) -> float:
    """Multiplier of the MCC weight at training progress ``p`` in [0, 1].

    0 while ``p < warmup`` (source only), then rising linearly to 1 over the next ``rampup`` of the
    run, then 1. ``warmup = rampup = 0`` (the paper): 1 throughout.

    Example::

        >>> [mcc_weight_factor(p, warmup=0.25, rampup=0.5) for p in (0.125, 0.25, 0.5, 0.75, 1.0)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    if progress < warmup:
        return 0.0
    if rampup == 0:
        return 1.0
    return min(1.0, (progress - warmup) / rampup)


class MCC(CDAN):
    """Minimum Class Confusion, alone (default) or with DANN's or CDAN's adversarial term.

    One training step (DANN's skeleton): features and logits of source and target images, the
    cross-entropy on the source, ``mcc_weight * mcc_loss(target logits, temperature)``, and with
    ``adversarial=True`` the domain loss of DANN (``conditioning: null``) or CDAN(+E)
    (``conditioning: auto`` and ``entropy_conditioning``), with the reversal coefficient's schedule.
    Logs ``train_mcc_loss`` besides DANN's metrics.

    The class-confusion matrix and its entropy weights are batch statistics by the paper's
    definition, so under DDP each rank computes the loss on its own target batch (``mcc_loss`` does
    not gather): DDP's gradient is the mean of the per-rank losses' gradients, not that of the loss
    on the global batch: the per-rank batch size is the one that defines the loss.

    Args:
        mcc_weight: mu, the weight of the MCC loss (default 1).
        temperature: T of the softmax in the MCC loss (2.5 in the paper).
        mcc_warmup: fraction of the run (training progress ``p``, optimizer steps as the reversal
            coefficient's) with MCC weight 0: a source-only warm start (0 in the paper).
        mcc_rampup: fraction of the run after the warm-up over which the weight rises linearly from 0
            to ``mcc_weight`` (0: at once). ``mcc_warmup + mcc_rampup <= 1``. Both follow the
            trainer's ``global_step``, so a resumed run continues the same schedule.
        adversarial: add the domain-adversarial term (False: MCC alone, the paper's main method).
        conditioning, entropy_conditioning: of that term, as in :class:`~lightning_tl.modules.CDAN`;
            None and False give DANN + MCC.
        **kwargs: the arguments of :class:`~lightning_tl.modules.CDAN` and
            :class:`~lightning_tl.modules.DANN`.

    Example::

        >>> from lightning_tl.nn import SmallConvNet
        >>> model = MCC(backbone=SmallConvNet(in_chans=3))
        >>> hasattr(model, "domain_classifier"), model.uses_target
        (False, True)
    """

    def __init__(
        self,
        mcc_weight: float = 1.0,
        temperature: float = 2.5,
        mcc_warmup: float = 0.0,
        mcc_rampup: float = 0.0,
        adversarial: bool = False,
        conditioning: Literal["auto", "multilinear", "randomized"] | None = None,
        entropy_conditioning: bool = False,
        **kwargs: Any,
    ) -> None:
        if not (math.isfinite(mcc_weight) and mcc_weight >= 0):
            raise ValueError(
                f"mcc_weight must be a finite number >= 0 (1 in the MCC paper), got {mcc_weight}"
            )
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"temperature must be a finite number > 0 (2.5 in the MCC paper), got {temperature}"
            )
        for name, value in (("mcc_warmup", mcc_warmup), ("mcc_rampup", mcc_rampup)):
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be a fraction of the run in [0, 1], got {value}")
        if mcc_warmup + mcc_rampup > 1:
            raise ValueError(
                f"mcc_warmup + mcc_rampup must be <= 1 (the run would end before MCC reaches its weight), "
                f"got {mcc_warmup} + {mcc_rampup}"
            )
        super().__init__(
            conditioning=conditioning,
            entropy_conditioning=entropy_conditioning,
            adversarial=adversarial,
            **kwargs,
        )
        self.mcc_weight = mcc_weight
        self.temperature = temperature
        self.mcc_warmup, self.mcc_rampup = mcc_warmup, mcc_rampup
        self._mcc_factor = 1.0  # mcc_weight_factor at the current step, set in on_train_batch_start

    @property
    def uses_target(self) -> bool:
        return True

    @property
    def needs_target_logits(self) -> bool:
        return True

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.mcc_warmup or self.mcc_rampup:
            progress = self.training_progress()
            self._mcc_factor = mcc_weight_factor(progress, self.mcc_warmup, self.mcc_rampup)

    def target_loss(self, target_logits: Tensor) -> Tensor:
        """``mcc_weight * factor * mcc_loss(target_logits, temperature)``, ``factor`` the warm-up's.

        Logs ``train_mcc_loss`` (unweighted) and, with a warm-up or ramp-up, ``train_mcc_weight``.
        """
        loss = mcc_loss(target_logits, self.temperature)
        batch_size = target_logits.shape[0]
        self.log("train_mcc_loss", loss, batch_size=batch_size)
        if self.mcc_warmup or self.mcc_rampup:
            self.log("train_mcc_weight", self.mcc_weight * self._mcc_factor, batch_size=batch_size)
            return self.mcc_weight * self._mcc_factor * loss
        return self.mcc_weight * loss
