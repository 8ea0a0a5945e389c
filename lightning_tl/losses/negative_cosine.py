"""Negative cosine similarity with a stop-gradient: the loss of BYOL and SimSiam."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl.losses._checks import check_pair, upcast


def negative_cosine_loss(p: Tensor, z: Tensor) -> Tensor:
    """``-cos(p, stopgrad(z))`` averaged over the batch: the prediction loss of BYOL and SimSiam.

    Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. 1 and Algorithm 1:
    ``D(p, z) = -(p / ||p||) . (z / ||z||)`` with the stop-gradient on ``z`` (Eq. 3), the
    prediction of one view against the projection of the other. Grill et al., "Bootstrap Your Own
    Latent", NeurIPS 2020, Eq. 2 regress the online prediction onto the target projection with
    ``||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z)``: the same minimiser and twice this gradient
    (BYOL's target is the momentum network, which carries no gradient either). This function uses
    SimSiam's convention, whose values lie in [-1, 1] (-1 when p and z point the same way); for
    BYOL's scale take ``2 + 2 * negative_cosine_loss(p, z)``. The symmetric losses of both papers
    are the mean of this function over the two (view, other view) pairings.

    ``z`` is detached here, so no gradient reaches the branch that produced it: pass the online
    prediction as ``p`` and the target (or other-view) projection as ``z``. A zero row has cosine
    0 (no NaN): the rows are normalised with ``F.normalize``.

    Args:
        p: (N, D) predictor outputs of one view.
        z: (N, D) projections of the other view, row i paired with ``p[i]``; treated as constants.

    Returns:
        Scalar loss in [-1, 1].

    Example::

        >>> import torch
        >>> float(negative_cosine_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]])))
        -1.0
    """
    check_pair(p, z, ("p", "z"))
    if p.shape[0] < 1:
        raise ValueError(f"p and z must hold at least one row, got shape {tuple(p.shape)}.")
    p, z = upcast(p, z.detach())
    z = z.to(p.dtype)
    cos = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)  # (N,)
    return -cos.mean()


class NegativeCosineLoss(nn.Module):
    """Module wrapper of :func:`negative_cosine_loss` (it has no settings)."""

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        return negative_cosine_loss(p, z)
