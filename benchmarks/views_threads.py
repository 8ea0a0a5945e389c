"""BatchViews on a CPU by thread count: the compiled kernel on PyTorch's OpenMP threads vs Python threads.

``python -m benchmarks.run views_threads`` (meant for many-core machines; on 2 cores it shows 1 and 2).
Two-view SimCLR images/s (the recipe of table b: s=1, blur at 10% kernel, RGB photo crops, batch
256) at 32 and 96 px for 1, 2, 4, ... threads up to the machine's count. Each build runs in its own
process: the default one (``-fopenmp``: the views are shared among the OpenMP threads PyTorch
already runs) and ``LIGHTNING_TL_OPENMP=0`` (a pool of Python threads calls the kernel, one share
each), which competes for the cores with PyTorch's OpenMP threads while they still spin after
BatchViews' small parameter kernels.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

from benchmarks._timing import markdown_table

SIZES = (32, 96)


def _thread_counts() -> list[int]:
    cores = os.cpu_count() or 1
    counts = [1 << i for i in range(cores.bit_length()) if 1 << i < cores]
    return [*counts, cores]


def measure(items: int = 1024, batch: int = 256) -> dict[str, float]:
    """images/s by ``"size/threads"`` in this process (whatever kernel build its environment selects)."""
    from benchmarks.augmentation_throughput import photo_crops
    from lightning_tl.augment import IMAGENET_MEAN, IMAGENET_STD, BatchViews, SimCLRViews, cpu_kernel

    if not cpu_kernel.available():
        raise RuntimeError(f"the CPU view kernel is unavailable: {cpu_kernel.unavailable_reason()}")
    rates = {}
    for size in SIZES:
        images = photo_crops(items, size)
        spec = SimCLRViews(jitter_strength=1.0).specs(size, 3)[0]
        make = BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, cpu_kernel=True)
        for threads in _thread_counts():
            torch.set_num_threads(threads)
            seconds = []
            for _ in range(4):  # the first pass warms up
                start = time.perf_counter()
                for s in range(0, items, batch):
                    make(images[s : s + batch], s)
                seconds.append(time.perf_counter() - start)
            rates[f"{size}/{threads}"] = items / statistics.median(seconds[1:])
    return rates


def _in_subprocess(openmp: bool) -> dict[str, float]:
    env = {**os.environ, "LIGHTNING_TL_OPENMP": "1" if openmp else "0"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.views_threads", "--measure"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> str:
    builds = {
        "PyTorch's OpenMP threads (default)": _in_subprocess(True),
        "Python threads": _in_subprocess(False),
    }
    rows = []
    for size in SIZES:
        for threads in _thread_counts():
            rows.append([size, threads, *(f"{rates[f'{size}/{threads}']:,.0f}" for rates in builds.values())])
    title = (
        f"BatchViews two-view images/s on this CPU ({os.cpu_count()} cores) by thread count, SimCLR recipe, "
        "batch 256; the compiled kernel's views shared among:\n\n"
    )
    return title + markdown_table(["image px", "threads", *builds], rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        print(json.dumps(measure()))
    else:
        print(run())
