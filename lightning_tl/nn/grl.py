"""The gradient reversal layer of domain-adversarial training, and its coefficient schedule.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky, "Domain-Adversarial
Training of Neural Networks", JMLR 17(59), 2016, Sec. 4.2: the layer R_lambda is the identity in the
forward pass and multiplies the gradient by ``-lambda`` in the backward pass, so one SGD step trains
the domain classifier to *separate* the domains while it trains the feature extractor to *confuse* it.
Sec. 5.2.2 raises lambda from 0 to 1 as ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` with gamma = 10,
where ``p`` is the training progress in [0, 1], "to suppress noisy signal from the domain classifier
at the early stages of the training procedure".

* :func:`grad_reverse`: the layer as a function.
* :func:`dann_coeff`: the schedule of lambda.
* :class:`GradientReversal`: the layer as a module whose coefficient is fixed or follows the schedule;
  the coefficient and the progress are buffers, so they travel in checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn


def check_coeff(coeff: float | Tensor) -> None:
    """Raise ``ValueError`` unless ``coeff`` is a finite number >= 0 (a Python number or 0-d tensor)."""
    if isinstance(coeff, Tensor):
        if coeff.ndim != 0:
            raise ValueError(f"coeff must be a scalar (0-d tensor), got shape {tuple(coeff.shape)}")
        value = float(coeff.detach())
    else:
        value = float(coeff)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"coeff must be a finite number >= 0 (the gradient is multiplied by -coeff), got {value}; "
            "DANN raises it from 0 to 1 with dann_coeff(progress)"
        )


class _GradReverse(torch.autograd.Function):
    """Identity forward, ``-coeff * grad`` backward; ``coeff`` receives no gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float | Tensor) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)  # a new tensor object sharing x's storage, so autograd records this node

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        coeff = ctx.coeff
        if isinstance(coeff, Tensor):  # keep the gradient's dtype (float16/bfloat16 under autocast)
            return grad * (-coeff).to(device=grad.device, dtype=grad.dtype), None
        return grad * -float(coeff), None


def grad_reverse(x: Tensor, coeff: float | Tensor = 1.0) -> Tensor:
    """Gradient reversal: returns ``x`` unchanged; in the backward pass the gradient is ``-coeff * grad``.

    Args:
        x: any tensor, e.g. features (B, F) on their way to a domain classifier.
        coeff: lambda >= 0, a Python number or a 0-d tensor (not differentiated).

    Example::

        >>> x = torch.ones(2, requires_grad=True)
        >>> grad_reverse(x, 0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000])
    """
    check_coeff(coeff)
    return _GradReverse.apply(x, coeff)  # type: ignore[no-any-return]


def check_gamma(gamma: float) -> None:
    """Raise ``ValueError`` unless ``gamma`` is a finite number > 0."""
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(
            f"gamma must be a finite number > 0 (the steepness of the lambda schedule), got {gamma}; "
            "the DANN paper uses gamma=10"
        )


def dann_coeff(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation factor ``2 / (1 + exp(-gamma * progress)) - 1`` (paper, Sec. 5.2.2).

    0 at ``progress = 0``, ``tanh(gamma / 4)`` at 0.5 (0.987 for gamma = 10) and close to 1 at the end.

    Args:
        progress: training progress ``p`` in [0, 1], e.g. optimizer steps done / total optimizer steps.
        gamma: steepness; 10 in the paper.

    Example::

        >>> round(dann_coeff(0.5), 4)
        0.9866
    """
    check_gamma(gamma)
    if not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
        raise ValueError(
            f"progress must be in [0, 1] (steps done / total steps), got {progress}; clamp it or fix the "
            "total number of steps"
        )
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a module, with a fixed coefficient or DANN's schedule.

    With ``gamma=None`` the coefficient is ``coeff`` throughout. With ``gamma`` set, call
    :meth:`set_progress` with the true training progress before each step (``DANN`` does it from
    ``trainer.global_step / trainer.estimated_stepping_batches``, which count optimizer steps, so the
    value is the same on every micro-batch of an accumulated step and after a resume); the
    coefficient becomes ``coeff * dann_coeff(progress, gamma)``. Progress and coefficient are
    buffers: they are saved in checkpoints and restored with the model.

    Args:
        coeff: the fixed coefficient, or the final one (lambda's maximum, 1 in the paper) with a schedule.
        gamma: steepness of :func:`dann_coeff`; None for a fixed coefficient.

    Example::

        >>> grl = GradientReversal(gamma=10.0)
        >>> grl.set_progress(0.0)
        >>> float(grl.coeff)
        0.0
    """

    progress: Tensor
    coeff: Tensor

    def __init__(self, coeff: float = 1.0, gamma: float | None = None) -> None:
        super().__init__()
        check_coeff(coeff)
        if gamma is not None:
            check_gamma(gamma)
        self.max_coeff = float(coeff)
        self.gamma = gamma
        self.register_buffer("progress", torch.tensor(0.0, dtype=torch.float64))
        start = 0.0 if gamma is not None else float(coeff)
        self.register_buffer("coeff", torch.tensor(start, dtype=torch.float64))

    def set_progress(self, progress: float) -> None:
        """Record the training progress in [0, 1] and, with a schedule, update the coefficient."""
        value = self.max_coeff * dann_coeff(progress, self.gamma) if self.gamma is not None else None
        if value is None and not (math.isfinite(progress) and 0.0 <= progress <= 1.0):
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        self.progress.fill_(progress)
        if value is not None:
            self.coeff.fill_(value)

    def forward(self, x: Tensor) -> Tensor:
        """(B, ...) -> the same tensor; gradients flowing back are multiplied by ``-coeff``."""
        return _GradReverse.apply(x, self.coeff)  # type: ignore[no-any-return]  # checked when set: no sync

    def extra_repr(self) -> str:
        schedule = f", gamma={self.gamma}" if self.gamma is not None else ""
        return f"coeff={self.max_coeff}{schedule}"
