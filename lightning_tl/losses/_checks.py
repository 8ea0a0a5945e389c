"""Input checks shared by the losses: each raises ``ValueError`` naming the bad value and the fix."""

from __future__ import annotations

import torch
from torch import Tensor


def check_temperature(temperature: float) -> None:
    """Temperatures of the contrastive losses (NT-Xent, InfoNCE) must be positive."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; SimCLR uses 0.1-0.5, MoCo 0.07-0.2.")


def check_positive(value: float, name: str, hint: str) -> None:
    """``value`` must be a number > 0 (a temperature, a divisor); ``hint`` gives the paper's value."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}; {hint}")


def check_non_negative(value: float, name: str, hint: str) -> None:
    """``value`` must be a number >= 0 (a loss weight); ``hint`` gives the paper's value."""
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}; {hint}")


def check_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    """``a`` and ``b`` must both be (N, D) with the same N and D."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must both have shape (N, D); "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )


def check_batch(n: int, needed: int, loss: str, why: str) -> None:
    """The (global) batch must hold at least ``needed`` rows."""
    if n < needed:
        raise ValueError(
            f"{loss} needs at least {needed} rows per batch ({why}), got N={n}; use a larger batch."
        )


def upcast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Cast half-precision tensors to float32 (the losses' reductions overflow or lose digits in fp16)."""
    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def full_precision(like: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``like``'s device: the matmuls of the batch statistics
    (cross-correlation, covariance, cross-entropy sums) then run in the inputs' (upcast) dtype
    instead of autocast's fp16/bf16."""
    return torch.autocast(like.device.type, enabled=False)
