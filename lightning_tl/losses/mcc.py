"""Minimum Class Confusion for domain adaptation, and the entropy weights it shares with CDAN+E."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Added to probabilities inside the log of :func:`certainty_weights`, as the MCC and CDAN authors do.
ENTROPY_EPS = 1e-5


def certainty_weights(probs: Tensor) -> Tensor:
    """``1 + exp(-H(p))`` per row: the entropy-aware weight of CDAN+E and MCC, from ``1 + 1/C`` to about 2.

    Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018 (entropy conditioning,
    CDAN+E) and Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020
    (uncertainty reweighting): confident predictions (low entropy) weigh up to 2, uniform ones
    ``1 + 1/C``. The entropy is ``H(p) = -sum_c p_c log(p_c + 1e-5)``, with the small constant both
    papers' released code puts in the log (it moves H by at most ``C * 1e-5`` and keeps it finite at
    ``p_c = 0``). No gradient flows through the weights: they are computed from ``probs.detach()``.

    Args:
        probs: (N, C) class probabilities, each row summing to 1.

    Returns:
        (N,) weights.

    Example::

        >>> certainty_weights(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
        tensor([2.0000, 1.5000])
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}.")
    p = probs.detach()
    if p.dtype in (torch.float16, torch.bfloat16):
        p = p.float()
    entropy = -(p * torch.log(p + ENTROPY_EPS)).sum(dim=1)  # (N,)
    return 1.0 + torch.exp(-entropy)


def _check_mcc_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0 (it divides the logits), got {temperature}; "
            "the MCC paper uses temperature=2.5"
        )


def mcc_loss(logits: Tensor, temperature: float = 2.5) -> Tensor:
    """Minimum Class Confusion on a batch of (unlabelled, target-domain) predictions.

    Jin, Wang, Long, Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020,
    Sec. 3: with ``Y = softmax(logits / T)`` (N, C), entropy weights
    ``W_i = N (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j)))`` (:func:`certainty_weights`, constants
    for the gradient), the class correlation ``C = Y^T diag(W) Y`` (C, C) is normalised so that each
    row sums to 1, and the loss is the mass off its diagonal, averaged over classes:
    ``(sum_jj' C_jj' - trace C) / C``. Minimising it pushes the classifier not to share a sample
    between two classes. Equal, value and gradient, to the authors' code on the same logits (their
    column normalisation of the symmetric ``C`` has the same sum and trace).

    The weights and the correlation are per batch by definition, so under DDP each rank computes the
    loss of its own batch (no gather); DDP then averages the per-rank gradients.

    Args:
        logits: (N, C) class logits of the target images, C >= 2.
        temperature: T > 0 (2.5 in the paper).

    Returns:
        Scalar loss in [0, 1): ``1 - (mean diagonal of the row-normalised C)``.

    Example::

        >>> round(float(mcc_loss(torch.tensor([[9.0, 0.0], [0.0, 9.0]]))), 4)
        0.0518
    """
    if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (N, C) with N >= 1 and C >= 2 classes, got {tuple(logits.shape)}."
        )
    _check_mcc_temperature(temperature)
    if logits.dtype in (torch.float16, torch.bfloat16):  # the correlation in float32 under autocast
        logits = logits.float()
    n, num_classes = logits.shape
    probs = F.softmax(logits / temperature, dim=1)  # (N, C)
    weights = certainty_weights(probs).to(probs.dtype)  # (N,)
    weights = n * weights / weights.sum()  # (N,) summing to N
    confusion = (probs * weights[:, None]).T @ probs  # (C, C), symmetric
    rows = confusion.sum(dim=1, keepdim=True).clamp_min(torch.finfo(confusion.dtype).tiny)  # (C, 1)
    confusion = confusion / rows  # (C, C), rows sum to 1
    return (confusion.sum() - confusion.trace()) / num_classes


class MCCLoss(nn.Module):
    """Module wrapper of :func:`mcc_loss` holding ``temperature``."""

    def __init__(self, temperature: float = 2.5) -> None:
        super().__init__()
        _check_mcc_temperature(temperature)
        self.temperature = temperature

    def forward(self, logits: Tensor) -> Tensor:
        return mcc_loss(logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
