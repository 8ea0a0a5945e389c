"""Momentum (EMA) encoders and the key queue of MoCo.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020: the key encoder follows the query encoder as ``theta_k <- m theta_k + (1 - m) theta_q``
(Eq. 2) and the keys of past batches wait in a queue that is "progressively replaced": the current
mini-batch is enqueued and the oldest is dequeued.

* :func:`update_momentum`: the EMA step, in place, on parameters and floating-point buffers.
* :func:`cosine_momentum`: m rising from ``base`` to ``final`` along a half cosine (BYOL, MoCo v3).
* :class:`MemoryQueue`: a ring buffer of L2-normalised keys held in buffers, so it is checkpointed,
  that enqueues the keys of every rank, so every rank holds the same queue.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist


def check_momentum(m: float, name: str = "momentum") -> None:
    """Raise ``ValueError`` unless ``0 <= m <= 1``."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(
            f"{name} must be in [0, 1], got {m}; MoCo uses 0.999 (0.99 for short runs); 1 freezes the target."
        )


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online``, in place, for every parameter and float buffer.

    Parameters and floating-point buffers (batch-norm ``running_mean``/``running_var``) are averaged,
    so the target's running statistics stay consistent with its averaged weights (as timm's
    ``ModelEmaV3`` does); integer buffers (``num_batches_tracked``) are copied from ``online``.
    The two modules must have the same structure (``target`` is usually a deep copy of ``online``).

    Args:
        online: the trained network (query encoder); read only.
        target: the momentum network (key encoder); updated in place.
        m: momentum in [0, 1]: 1 keeps ``target``, 0 copies ``online``.
    """
    check_momentum(m)
    online_state = dict(online.named_parameters()) | dict(online.named_buffers())
    target_state = dict(target.named_parameters()) | dict(target.named_buffers())
    if online_state.keys() != target_state.keys():
        missing = sorted(online_state.keys() ^ target_state.keys())[:5]
        raise ValueError(f"online and target modules differ in structure (e.g. {missing}); use a deep copy.")
    for name, t in target_state.items():
        o = online_state[name]
        if t.is_floating_point():
            t.mul_(m).add_(o.detach(), alpha=1.0 - m)
        else:
            t.copy_(o)


def cosine_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Momentum at ``step``: ``final - (final - base) * (1 + cos(pi * step / total_steps)) / 2``.

    ``base`` at step 0, ``final`` at ``total_steps`` and after (BYOL, Grill et al. 2020, Sec. 3.2;
    MoCo v3, Chen et al. 2021, uses 0.99 -> 1).
    """
    check_momentum(base, "base")
    check_momentum(final, "final")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    t = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (1.0 + math.cos(math.pi * t)) / 2.0


class MemoryQueue(nn.Module):
    """A first-in first-out queue of ``size`` L2-normalised keys of width ``dim``, kept in buffers.

    ``keys`` (size, dim) and ``pointer`` (the next row to write) are buffers: they are saved in
    checkpoints and restored on resume. The queue starts full of random unit vectors, as in MoCo;
    ``count`` says how many rows hold real keys so far (for inspection; every row is used as a negative).

    :meth:`enqueue` gathers the keys of every rank (rank order, ranks may pass different counts, e.g.
    on a smaller last batch) and writes them at ``pointer``, wrapping to row 0 at the end: every rank
    then holds the same queue. A size that is not a multiple of the global batch is fine: a write
    that runs past the end continues at the start.

    Args:
        size: number of keys K (65536 in MoCo; at most a few epochs' worth of images on small data).
        dim: key width (the projection output, 128 in MoCo).
    """

    keys: Tensor
    pointer: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}; MoCo uses 65536, small data 1024-4096.")
        if dim < 1:
            raise ValueError(f"queue dim must be >= 1 (the key width), got {dim}.")
        self.size, self.dim = size, dim
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # (K, D)
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write the keys (N, dim) of every rank, gathered in rank order, replacing the oldest rows."""
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (N, {self.dim}), got {tuple(keys.shape)}.")
        everyone = dist.gather_uneven(keys.detach())  # (sum of N_r, D), rank order
        n = everyone.shape[0]
        if n > self.size:
            raise ValueError(
                f"{n} keys arrived at once but the queue holds {self.size}; set the queue size to at least "
                "the global batch size (batch_size x devices)."
            )
        start = int(self.pointer)
        rows = (start + torch.arange(n, device=self.keys.device)) % self.size  # wraps past the end
        self.keys[rows] = everyone.to(self.keys.dtype)
        self.pointer.fill_((start + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def forward(self) -> Tensor:
        """The queue (K, dim), a detached copy: safe to use as negatives while enqueueing later."""
        return self.keys.clone()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
