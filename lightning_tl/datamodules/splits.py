"""Deterministic stratified splits of a labelled index set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_holdout(holdout: Sequence[float]) -> tuple[float, float]:
    """``(val_fraction, test_fraction)`` checked: both in [0, 1), leaving a train split; as floats."""
    if len(holdout) != 2:
        raise ValueError(f"holdout must be [val_fraction, test_fraction], e.g. [0.1, 0.0]; got {holdout}")
    val_fraction, test_fraction = float(holdout[0]), float(holdout[1])
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            "holdout fractions (val, test) must be in [0, 1) and leave a train split (sum < 1), "
            f"got holdout={list(holdout)}"
        )
    return val_fraction, test_fraction


def fraction_to_count(fraction: float, total: int) -> int:
    """Number of items a ``fraction`` of ``total`` stands for (rounded to nearest)."""
    return round(fraction * total)


def _allocate(class_counts: list[int], total: int, taken: list[int]) -> list[int]:
    """Split ``total`` over classes in proportion to their size, by largest remainder.

    ``taken`` holds what earlier splits already took from each class; no class gives more than it has left.
    """
    n = sum(class_counts)
    ideal = [total * c / n if n else 0.0 for c in class_counts]
    alloc = [min(int(x), c - t) for x, c, t in zip(ideal, class_counts, taken, strict=True)]
    # hand out the remaining items to the classes with the largest fractional parts (ties: lower class)
    order = sorted(range(len(class_counts)), key=lambda k: (-(ideal[k] - int(ideal[k])), k))
    remaining = total - sum(alloc)
    while remaining > 0:
        progressed = False
        for k in order:
            if remaining and alloc[k] + taken[k] < class_counts[k]:
                alloc[k] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return alloc


def stratified_split(labels: Tensor | Sequence[int], sizes: Sequence[int], seed: int) -> list[Tensor]:
    """Split indices ``0..N-1`` into held-out parts of the given ``sizes`` plus the rest.

    Each held-out part has (up to rounding) the class proportions of the whole set; members are drawn
    at random within each class from a generator seeded with ``seed``, so the split is a pure
    function of (labels, sizes, seed). Returns ``[rest, part_0, part_1, ...]``, each a sorted
    int64 tensor; together they cover every index exactly once.

    Args:
        labels: (N,) integer class labels (all equal, e.g. -1, for an unlabelled set: a plain random split).
        sizes: number of items in each held-out part; their sum must not exceed N.
        seed: split seed.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)  # (N,)
    n = labels.numel()
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"split sizes must be >= 0 and sum to at most {n} items, got {list(sizes)}")
    classes = torch.unique(labels).tolist()  # sorted
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    g = torch.Generator().manual_seed(seed)
    members = [m[torch.randperm(m.numel(), generator=g)] for m in members]
    counts = [m.numel() for m in members]
    taken = [0] * len(classes)
    parts: list[Tensor] = []
    for size in sizes:
        alloc = _allocate(counts, size, taken)
        part = [m[t : t + a] for m, t, a in zip(members, taken, alloc, strict=True)]
        taken = [t + a for t, a in zip(taken, alloc, strict=True)]
        parts.append(torch.sort(torch.cat(part)).values if part else torch.empty(0, dtype=torch.long))
    rest = [m[t:] for m, t in zip(members, taken, strict=True)]
    rest_t = torch.sort(torch.cat(rest)).values if rest else torch.empty(0, dtype=torch.long)
    return [rest_t, *parts]
