"""NT-Xent, the contrastive loss of SimCLR, with negatives from every rank under DDP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.losses._checks import check_pair, check_temperature


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5, gather: bool = False) -> Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020,
    Algorithm 1: for each of the 2N augmented views, the positive is the other view of the same image
    and the negatives are the remaining 2N - 2 views; the loss is averaged over all 2N anchors.

    Args:
        z1: (N, D) projections of the first views; L2-normalised here.
        z2: (N, D) projections of the second views, row i pairs with ``z1[i]``.
        temperature: tau > 0 dividing the cosine similarities.
        gather: take negatives from every rank. The anchors stay this rank's 2N views and gradients
            flow back through the gather, so with DDP's gradient averaging the update equals the
            single-process update on the global batch; the value returned is this rank's share, whose
            mean over ranks (what ``self.log(..., sync_dist=True)`` reports) is the global loss.

    Returns:
        Scalar loss.
    """
    check_pair(z1, z2, ("z1", "z2"))
    check_temperature(temperature)
    n = z1.shape[0]
    if n < 2 and not (gather and dist.world_size() > 1):
        raise ValueError(f"NT-Xent needs at least 2 images per batch to have negatives, got N={n}.")
    # Similarities in float32 even under autocast: exp(1/tau) overflows fp16 at small tau.
    z = torch.cat([z1, z2])
    if z.dtype in (torch.float16, torch.bfloat16):
        z = z.float()
    local = F.normalize(z, dim=1)  # (2N, D) rows: view-1 block, then view-2 block
    if gather and dist.world_size() > 1:
        w, r = dist.world_size(), dist.rank()
        both = dist.gather(local.view(2, n, -1).transpose(0, 1).contiguous(), with_grad=True)  # (W*N, 2, D)
        both = both.view(w, n, 2, -1).permute(2, 0, 1, 3).reshape(2 * w * n, -1)  # (2WN, D) view-major
        offset = r * n
    else:
        w, offset, both = 1, 0, local
    total = w * n
    logits = local @ both.T / temperature  # (2N, 2WN)
    # Each anchor must not count itself as a candidate.
    rows = torch.arange(2 * n, device=local.device)
    own = torch.cat([rows[:n] + offset, rows[n:] - n + total + offset])  # anchor's own column, (2N,)
    positive = torch.cat([rows[n:] - n + total + offset, rows[:n] + offset])  # its partner's column
    logits = logits.masked_fill(F.one_hot(own, 2 * total).bool(), float("-inf"))
    return F.cross_entropy(logits, positive)


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent_loss` holding ``temperature`` and ``gather``."""

    def __init__(self, temperature: float = 0.5, gather: bool = False) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature, self.gather)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
