"""MCC: source cross-entropy plus Minimum Class Confusion on the target predictions.

Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020. The
loss on unlabelled target images is :func:`~lightning_tl.losses.mcc_loss`, the off-diagonal mass of
an entropy-weighted, row-normalised class correlation matrix of temperature-scaled predictions; it
works alone (the paper's main method: ``L_CE(source) + mu L_MCC(target)``) and as a
regulariser of adversarial methods (its DANN + MCC and CDAN + MCC rows).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from lightning_tl.losses import mcc_loss
from lightning_tl.modules.cdan import CDAN


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
        super().__init__(
            conditioning=conditioning,
            entropy_conditioning=entropy_conditioning,
            adversarial=adversarial,
            **kwargs,
        )
        self.mcc_weight = mcc_weight
        self.temperature = temperature

    @property
    def uses_target(self) -> bool:
        return True

    @property
    def needs_target_logits(self) -> bool:
        return True

    def target_loss(self, target_logits: Tensor) -> Tensor:
        """``mcc_weight * mcc_loss(target_logits, temperature)``; logs ``train_mcc_loss`` (unweighted)."""
        loss = mcc_loss(target_logits, self.temperature)
        self.log("train_mcc_loss", loss, batch_size=target_logits.shape[0])
        return self.mcc_weight * loss
