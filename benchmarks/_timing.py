"""Wall-clock timing helpers shared by the benchmarks (median of repeats after warm-up)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_seconds(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(
    fns: Sequence[Callable[[], object]], repeats: int = 10, warmup: int = 2
) -> list[float]:
    """Median wall time of each of ``fns``, called in turn each round, after ``warmup`` rounds."""
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
