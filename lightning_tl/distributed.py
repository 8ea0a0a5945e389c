"""Distributed helpers that degrade to no-ops in a single process.

Everything in the library that looks across the batch (contrastive negatives, feature banks,
metrics) goes through these functions, so the same code runs on one CPU and under DDP.
Without an initialised process group: ``world_size() == 1``, ``rank() == 0`` and ``gather(x)``
returns ``x`` unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group is initialised and has more than one member."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the default group, 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group, 0 without one."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends each rank the summed gradient of its own slice.

    Forward: every rank contributes ``x`` of shape (N, ...), every rank receives (W, N, ...).
    Backward: the upstream gradient of the gathered tensor is summed over ranks (each rank's
    loss touched every slice) and the slice belonging to this rank is returned.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.stack(out)  # (W, N, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]  # (N, ...)


def gather(x: Tensor, with_grad: bool = False) -> Tensor:
    """Concatenate ``x`` (N, ...) from every rank along dim 0, in rank order: (W*N, ...).

    Every rank must pass the same shape. With ``with_grad=True`` gradients flow back to each
    rank's own slice (summed over the ranks that used it), so a loss built on the gathered
    tensor trains every rank's encoder. Without a process group, returns ``x``.
    """
    if not is_distributed():
        return x
    if with_grad:
        stacked = _GatherWithGrad.apply(x)
    else:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.detach().contiguous())
        stacked = torch.stack(parts)
    return stacked.flatten(0, 1)  # (W*N, ...)


def gather_uneven(x: Tensor) -> Tensor:
    """Concatenate ``x`` (N_r, ...) from every rank when N_r may differ between ranks; no grad.

    Shapes other than dim 0 must match. Rows come in rank order: rank 0's, then rank 1's, ...
    """
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    counts = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks (a new tensor); identity without a process group."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
