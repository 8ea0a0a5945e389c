"""Shuffling batch norm (MoCo, Sec. 3.3): encode the keys of the global batch in a shuffled order.

He et al., CVPR 2020: with per-GPU batch norm, a query and its positive key are normalised with the
statistics of the same sub-batch, which "leaks information" and lets the model cheat the pretext task.
The fix: gather the key images of every rank, shuffle them, let each rank encode one slice, gather the
keys back and undo the shuffle, so the keys of a rank's images were normalised among other images.

:func:`shuffle_permutation` is a pure function of ``(total, seed)``: every rank draws the same
permutation without communication and without touching the global RNG, and a single-process reference
can reproduce it. In one process :func:`shuffled_forward` calls the encoder on the batch unchanged:
batch norm over one batch is invariant to the order of its rows, so a shuffle would change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_tl import distributed as dist


def shuffle_permutation(total: int, seed: int) -> Tensor:
    """A permutation of ``range(total)`` drawn from a private generator seeded with ``seed``."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def shuffled_forward(encoder: Callable[[Tensor], Tensor], x: Tensor, seed: int) -> Tensor:
    """``encoder`` applied to this rank's rows ``x`` (N_r, ...), with batch-norm groups shuffled across ranks.

    Under DDP: the rows of every rank are gathered in rank order (M = sum of N_r), permuted with
    ``shuffle_permutation(M, seed)``; rank r encodes the N_r rows at positions ``offset_r .. offset_r + N_r``
    of the permuted order; the outputs are gathered and put back in the original order, and this rank
    returns the outputs of its own rows. For an encoder that treats rows independently the result is
    exactly ``encoder(x)``; only batch statistics see a different group. No gradient flows (keys).

    Without a process group, returns ``encoder(x)``.
    """
    if not dist.is_distributed():
        return encoder(x)
    n = x.shape[0]
    counts = dist.gather(torch.tensor([n], device=x.device)).tolist()  # (W,) rows per rank
    offset = sum(counts[: dist.rank()])
    everyone = dist.gather_uneven(x)  # (M, ...) rank order
    perm = shuffle_permutation(everyone.shape[0], seed).to(x.device)  # (M,) same on every rank
    out = encoder(everyone[perm[offset : offset + n]])  # (N_r, D): a shuffled slice
    shuffled = dist.gather_uneven(out)  # (M, D): outputs of everyone[perm]
    restored = torch.empty_like(shuffled)
    restored[perm] = shuffled  # restored[perm[j]] = encoder(everyone[perm[j]]): original order
    return restored[offset : offset + n]
