"""Barlow Twins: drive the cross-correlation of two views' embeddings to the identity."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.losses._checks import check_batch, check_non_negative, check_pair, full_precision, upcast

#: Added to each feature's variance before the square root when standardising along the batch
#: (the authors' code normalises with an affine-free ``BatchNorm1d``, whose default this is).
BARLOW_TWINS_EPS = 1e-5


def _standardise(z: Tensor) -> Tensor:
    """(M, D) -> (M, D): every column centred and divided by its (biased, eps-regularised) std."""
    mean = z.mean(dim=0, keepdim=True)  # (1, D)
    var = z.var(dim=0, correction=0, keepdim=True)  # (1, D)
    return (z - mean) / torch.sqrt(var + BARLOW_TWINS_EPS)


def _check_lambda(lambda_: float) -> None:
    check_non_negative(lambda_, "lambda_", "Barlow Twins uses 5e-3 (the weight of the off-diagonal terms).")


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambda_: float = 5e-3, gather: bool = False) -> Tensor:
    """Barlow Twins' redundancy-reduction loss on the cross-correlation of two views.

    Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", ICML 2021, Eq. 1-2: with the embeddings of each view mean-centred along the batch,
    ``C_ij = sum_b z1_bi z2_bj / (sqrt(sum_b z1_bi^2) sqrt(sum_b z2_bj^2))`` (D, D), and the loss is
    ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``. Computed as the authors' code does: each
    column is standardised with its biased variance plus ``BARLOW_TWINS_EPS`` (1e-5, so a constant
    feature gives a finite loss rather than NaN) and ``C = z1_std.T @ z2_std / M`` over the M rows.
    The paper's Algorithm 1 divides by ``z.std(0)``, torch's unbiased std, which scales ``C`` by
    ``(M - 1) / M`` (Eq. 2, and its code, are the biased form used here).

    ``gather=True`` makes every statistic global under DDP: the rows of every rank are gathered
    with gradient, so the means, variances and ``C`` are those of the global batch of W * N rows,
    exactly as one process on the global batch. The value returned is that global loss, the same
    on every rank. The backward of the gather sums the gradients of the W identical losses, so each
    rank gets W times the global-batch gradient of its own rows, and DDP's gradient averaging
    (division by W) leaves exactly the single-process gradient: no extra 1/W factor belongs here.
    Each rank computes the (D, D) matrix over all W * N rows (W times the local work). Without
    ``gather`` the statistics are per rank, which is a different loss for W > 1.

    Half-precision inputs are scored in float32, with autocast off for the (D, D) matmul.

    Args:
        z1: (N, D) projections of the first views (unnormalised projector outputs).
        z2: (N, D) projections of the second views, row i the other view of ``z1[i]``.
        lambda_: weight >= 0 of the off-diagonal (redundancy) terms; 5e-3 in the paper.
        gather: take the batch statistics over every rank (no-op without a process group).

    Returns:
        Scalar loss; 0 only when ``C`` is the identity.

    Example::

        >>> z = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])  # two fully correlated features: C = ones
        >>> round(float(barlow_twins_loss(z, z)), 6)  # 0 on the diagonal + 5e-3 * 2 off it
        0.01
    """
    check_pair(z1, z2, ("z1", "z2"))
    _check_lambda(lambda_)
    z1, z2 = upcast(z1, z2)
    z2 = z2.to(z1.dtype)
    if gather and dist.world_size() > 1:
        z1 = dist.gather(z1, with_grad=True)  # (WN, D)
        z2 = dist.gather(z2, with_grad=True)  # (WN, D)
    m = z1.shape[0]
    check_batch(m, 2, "Barlow Twins", "it standardises every feature along the batch")
    with full_precision(z1):
        c = _standardise(z1).T @ _standardise(z2) / m  # (D, D)
        diagonal = torch.diagonal(c)  # (D,)
        off_diagonal = c - torch.diag_embed(diagonal)  # (D, D), zeros on the diagonal
        return (1 - diagonal).pow(2).sum() + lambda_ * off_diagonal.pow(2).sum()


class BarlowTwinsLoss(nn.Module):
    """Module wrapper of :func:`barlow_twins_loss` holding ``lambda_`` and ``gather``."""

    def __init__(self, lambda_: float = 5e-3, gather: bool = False) -> None:
        super().__init__()
        _check_lambda(lambda_)
        self.lambda_ = lambda_
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambda_, self.gather)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, gather={self.gather}"
