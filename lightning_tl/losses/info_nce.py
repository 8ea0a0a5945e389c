"""InfoNCE, the contrastive loss of MoCo, against a queue of negatives or the batch's other keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl.losses._checks import check_pair, check_temperature


def info_nce_loss(
    query: Tensor, key: Tensor, queue: Tensor | None = None, temperature: float = 0.2
) -> Tensor:
    """InfoNCE of MoCo: each query must pick its own key among the negatives.

    He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, Eq. 1
    and Algorithm 1: logits ``[q . k+, q . queue_1, ..., q . queue_K] / tau`` with the positive in
    column 0, and cross-entropy with label 0, averaged over the N queries. Computed with
    ``cross_entropy`` (a log-sum-exp), so small temperatures do not overflow.

    Args:
        query: (N, D) L2-normalised query projections (they are not normalised here).
        key: (N, D) L2-normalised keys, row i the positive of ``query[i]``; treated as constants by
            MoCo (computed without gradient), but gradients do flow if they require it.
        queue: (K, D) L2-normalised negatives. None takes the other N - 1 keys of the batch as the
            negatives (MoCo v3's in-batch form, Chen et al. 2021, without its 2 tau factor).
        temperature: tau > 0 (0.07 in MoCo, 0.2 in MoCo v2).

    Returns:
        Scalar loss.
    """
    check_pair(query, key, ("query", "key"))
    check_temperature(temperature)
    if queue is not None and (queue.ndim != 2 or queue.shape[1] != query.shape[1]):
        raise ValueError(
            f"queue must have shape (K, {query.shape[1]}) to match query (N, D); got {tuple(queue.shape)}."
        )
    if query.dtype in (torch.float16, torch.bfloat16):  # logits in float32: exp(1/tau) overflows fp16
        query, key = query.float(), key.float()
    key = key.to(query.dtype)
    if queue is None:
        # row i: positive key_i, then the other keys; cross-entropy over q @ k.T with target i
        # is the same sum with the positive moved to column 0.
        logits = query @ key.T / temperature  # (N, N)
        target = torch.arange(query.shape[0], device=query.device)
        return F.cross_entropy(logits, target)
    positive = (query * key).sum(dim=1, keepdim=True)  # (N, 1)
    negatives = query @ queue.to(query.dtype).T  # (N, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


class InfoNCELoss(nn.Module):
    """Module wrapper of :func:`info_nce_loss` holding ``temperature``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(self, query: Tensor, key: Tensor, queue: Tensor | None = None) -> Tensor:
        return info_nce_loss(query, key, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
