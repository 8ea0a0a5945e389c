"""VICReg: invariance, variance and covariance terms on two views' embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.losses._checks import check_batch, check_non_negative, check_pair, full_precision, upcast

#: epsilon of the regularised standard deviation ``sqrt(Var(z) + eps)`` of the variance term.
VICREG_EPS = 1e-4
#: gamma, the target standard deviation of every feature in the variance hinge.
VICREG_GAMMA = 1.0


def _variance_term(z: Tensor) -> Tensor:
    """v(Z): mean over features of ``max(0, gamma - sqrt(Var(z_j) + eps))``, Var unbiased."""
    std = torch.sqrt(z.var(dim=0) + VICREG_EPS)  # (D,)
    return F.relu(VICREG_GAMMA - std).mean()


def _covariance_term(z: Tensor) -> Tensor:
    """c(Z): sum of the squared off-diagonal entries of the (unbiased) covariance, divided by D."""
    m, d = z.shape
    centred = z - z.mean(dim=0, keepdim=True)  # (M, D)
    cov = centred.T @ centred / (m - 1)  # (D, D)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))  # (D, D), zeros on the diagonal
    return off_diagonal.pow(2).sum() / d


def _check_weights(sim_weight: float, var_weight: float, cov_weight: float) -> None:
    hint = "VICReg uses sim_weight=25, var_weight=25, cov_weight=1."
    check_non_negative(sim_weight, "sim_weight", hint)
    check_non_negative(var_weight, "var_weight", hint)
    check_non_negative(cov_weight, "cov_weight", hint)


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    gather: bool = False,
) -> Tensor:
    """VICReg's variance-invariance-covariance loss.

    Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022, Eq. 1-6:

    - invariance ``s(Z, Z')``: the mean squared error between the paired rows;
    - variance ``v(Z) = 1/D sum_j max(0, gamma - sqrt(Var(z^j) + eps))`` with gamma = 1,
      eps = 1e-4 and the unbiased variance along the batch;
    - covariance ``c(Z) = 1/D sum_{i != j} C(Z)_ij^2`` with ``C(Z)`` the unbiased (D, D) covariance;

    ``loss = sim_weight * s + var_weight * (v(Z) + v(Z')) / 2 + cov_weight * (c(Z) + c(Z'))``.

    Two scale conventions follow the authors' released code, with which the paper's weights
    (25, 25, 1) were tuned, rather than Eq. 5-6 as printed: ``s`` is averaged over the D features
    too (Eq. 5 sums them), and the two variance terms are averaged (Eq. 6 sums them, which
    would double the effective ``var_weight``).

    ``gather=True`` computes all three terms on the global batch under DDP: the rows of every
    rank are gathered with gradient, the value returned is the global loss (the same on every
    rank), and DDP's gradient averaging then gives exactly the single-process gradient on the
    global batch (the gather's backward sums the W ranks' identical gradients; DDP divides by W).
    Without ``gather`` the variance and covariance are per rank, a different loss for W > 1.

    Half-precision inputs are scored in float32, with autocast off for the covariances.

    Args:
        z1: (N, D) embeddings (expander outputs) of the first views.
        z2: (N, D) embeddings of the second views, row i the other view of ``z1[i]``.
        sim_weight: lambda >= 0, weight of the invariance term (25 in the paper).
        var_weight: mu >= 0, weight of the variance term (25).
        cov_weight: nu >= 0, weight of the covariance term (1).
        gather: take the batch statistics over every rank (no-op without a process group).

    Returns:
        Scalar loss.

    Example::

        >>> z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # std sqrt(2) > 1, C_01 = 2
        >>> float(vicreg_loss(z, z))  # 25 * 0 + 25 * 0 + 1 * (2 * 2 ** 2 / 2 + same)
        8.0
    """
    check_pair(z1, z2, ("z1", "z2"))
    _check_weights(sim_weight, var_weight, cov_weight)
    z1, z2 = upcast(z1, z2)
    z2 = z2.to(z1.dtype)
    if gather and dist.world_size() > 1:
        z1 = dist.gather(z1, with_grad=True)  # (WN, D)
        z2 = dist.gather(z2, with_grad=True)  # (WN, D)
    check_batch(z1.shape[0], 2, "VICReg", "the variance and covariance are taken along the batch")
    with full_precision(z1):
        invariance = F.mse_loss(z1, z2)
        variance = (_variance_term(z1) + _variance_term(z2)) / 2
        covariance = _covariance_term(z1) + _covariance_term(z2)
        return sim_weight * invariance + var_weight * variance + cov_weight * covariance


class VICRegLoss(nn.Module):
    """Module wrapper of :func:`vicreg_loss` holding the three weights and ``gather``."""

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather: bool = False,
    ) -> None:
        super().__init__()
        _check_weights(sim_weight, var_weight, cov_weight)
        self.sim_weight = sim_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg_loss(z1, z2, self.sim_weight, self.var_weight, self.cov_weight, self.gather)

    def extra_repr(self) -> str:
        return (
            f"sim_weight={self.sim_weight}, var_weight={self.var_weight}, "
            f"cov_weight={self.cov_weight}, gather={self.gather}"
        )
