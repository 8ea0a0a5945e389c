"""Counter-based random numbers on tensors: many independent streams, one per sample seed.

SplitMix64 (Steele, Lea, Flood, "Fast Splittable Pseudorandom Number Generators", OOPSLA 2014) is a
pure function of a 64-bit counter, so draw ``k`` of the stream seeded ``s`` is ``mix(s + (k + 1) * gamma)``
and a whole batch of streams is a few vectorised integer ops on any device. On-device views use it
to draw each image's augmentation parameters from that image's own seed: the views of an image
then do not depend on which other images share its batch (or process), just as in the per-sample
pipeline. int64 arithmetic wraps around in torch, as the unsigned 64-bit maths needs; right shifts
are masked to act as logical shifts.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """SplitMix64 step on int64 tensors (uint64 bit patterns): ``mix(x + gamma)``, elementwise."""
    x = x + _GAMMA
    x = (x ^ _shift_right(x, 30)) * _MUL1
    x = (x ^ _shift_right(x, 27)) * _MUL2
    return x ^ _shift_right(x, 31)


def uniform(seeds: Tensor, count: int, offset: int = 0) -> Tensor:
    """Draws ``offset .. offset + count - 1`` of the stream of every seed, uniform in [0, 1).

    Args:
        seeds: (N,) int64, one stream per row.
        count: draws per stream.
        offset: index of the first draw (streams can be split into disjoint blocks by offset).

    Returns:
        (N, count) float64 with 53 random bits each.
    """
    if seeds.dtype != torch.int64 or seeds.ndim != 1:
        raise ValueError(f"seeds must be a (N,) int64 tensor, got {seeds.dtype} {tuple(seeds.shape)}")
    steps = torch.arange(offset, offset + count, device=seeds.device, dtype=torch.int64)  # (count,)
    bits = splitmix64(seeds.unsqueeze(1) + steps * _GAMMA)  # (N, count)
    return _shift_right(bits, 11).to(torch.float64) * 2.0**-53


def derive_seeds(seed: int, count: int, device: torch.device | str | None = None) -> Tensor:
    """``count`` int64 seeds (the first raw draws of the stream ``seed``), e.g. one per image of a batch."""
    steps = torch.arange(count, device=device, dtype=torch.int64)  # (count,)
    return splitmix64(_signed(seed) + steps * _GAMMA)


def mix_seeds(*values: int | Tensor) -> Tensor:
    """Fold integers into a 63-bit seed: ``h = splitmix64(h ^ v)`` over ``values``, then ``h >> 1``.

    Any value may be an int64 tensor: the result then has its shape (e.g. the seeds of many samples
    ``mix_seeds(seed, epoch, indices)`` at once). Ints are taken modulo 2**64, as uint64 bit patterns.
    """
    h = torch.zeros((), dtype=torch.int64)
    for v in values:
        bits = v if isinstance(v, Tensor) else torch.tensor(_signed(v), dtype=torch.int64)
        h = splitmix64(h ^ bits)
    return _shift_right(h, 1)  # 63 bits: fits torch.manual_seed on every platform


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit seed from a tuple of integers, e.g. ``(seed, epoch, index)``."""
    return int(mix_seeds(*values))
