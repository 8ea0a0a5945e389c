"""Table (b): two-view SimCLR augmentation throughput, per-sample pipelines vs batched views.

Images: random crops of scikit-image's colour photographs, stored as uint8 RGB at the table's size.
Each image becomes two views with the SimCLR ImageNet recipe (crop scale 0.08-1, flip, colour jitter
s=1 with p=0.8, grayscale p=0.2, blur p=0.5 with a kernel of 10% of the side, normalisation):

* per-sample, torchvision v2 on uint8 tensors (our ``view_transform``, what a DataLoader worker runs);
* per-sample, lightly's ``SimCLRTransform`` on PIL images (its defaults are the same recipe);
* batched: :class:`~lightning_tl.augment.BatchViews` on batches of 256, on one
  thread and on all threads (the compiled CPU kernel, the default where it builds), with the eager
  ops instead (``cpu_kernel=False``) on all threads, and with bfloat16 views (``dtype``) on all
  threads.

Per-sample pipelines run on one thread (= one DataLoader worker).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torchvision.transforms import v2

from benchmarks._timing import markdown_table
from lightning_tl.augment import IMAGENET_MEAN, IMAGENET_STD, BatchViews, SimCLRViews, view_transform

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def photo_crops(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` random crops of scikit-image's colour photos resized to ``size``: uint8 (N, 3, S, S)."""
    from skimage import data

    g = torch.Generator().manual_seed(seed)
    photos = [
        torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1) for name in PHOTOS
    ]
    crop = v2.RandomResizedCrop(size, scale=(0.05, 0.5), antialias=True)
    out = []
    for i in range(count):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            out.append(crop(photos[i % len(photos)][:3]))
    return torch.stack(out)


def _rate(fn: Callable[[int], object], items: int, repeats: int = 3) -> float:
    """Images/s of ``fn(items)``: the median of ``repeats`` timed passes after a warm-up."""
    fn(min(items, 64))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(items)
        seconds.append(time.perf_counter() - start)
    return items / statistics.median(seconds)


def _lightly_rate(images: torch.Tensor, size: int, items: int) -> float | None:
    """lightly's per-sample SimCLRTransform images/s on one thread, or None where lightly is not installed."""
    try:
        from lightly.transforms import SimCLRTransform
    except ImportError:
        return None
    from PIL import Image

    transform = SimCLRTransform(input_size=size)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images[:items]]

    def run(n: int) -> None:
        for i in range(n):
            transform(pil[i % len(pil)])

    return _rate(run, items)


def _cell(rate: float, tv: float, lightly: float | None) -> str:
    versus = f"{rate / tv:.1f}x" + ("" if lightly is None else f" / {rate / lightly:.1f}x")
    return f"{rate:.0f} ({versus})"


def run(items: int = 1024, sizes: tuple[int, ...] = (32, 64, 96), batch: int = 256) -> str:
    threads = torch.get_num_threads()
    rows = []
    for size in sizes:
        images = photo_crops(items, size)
        spec = SimCLRViews(jitter_strength=1.0).specs(size, 3)[0]
        one_view = view_transform(spec, 3, IMAGENET_MEAN, IMAGENET_STD)
        makers = {
            "default": BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD),
            "eager": BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, cpu_kernel=False),
            "bf16": BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, dtype=torch.bfloat16),
        }

        def per_sample(n: int, images: torch.Tensor = images, view: v2.Compose = one_view) -> None:
            for i in range(n):
                view(images[i % len(images)]), view(images[i % len(images)])

        def batches(n: int, make: BatchViews, images: torch.Tensor = images) -> None:
            for start in range(0, n, batch):
                make(images[start : start + batch], start)

        torch.set_num_threads(1)
        tv = _rate(per_sample, items)
        lightly = _lightly_rate(images, size, items)
        ours_1 = _rate(partial(batches, make=makers["default"]), items)
        torch.set_num_threads(threads)
        ours = {name: _rate(partial(batches, make=make), items) for name, make in makers.items()}

        rows.append(
            [
                size,
                f"{tv:.0f}",
                "not installed (`make bench` installs it)" if lightly is None else f"{lightly:.0f}",
                _cell(ours_1, tv, lightly),
                _cell(ours["default"], tv, lightly),
                _cell(ours["eager"], tv, lightly),
                _cell(ours["bf16"], tv, lightly),
            ]
        )
    title = (
        f"Two views per image, SimCLR recipe (s=1, blur at 10% kernel), RGB photo crops, {items} images; "
        f"images/s (speed-up over per-sample torchvision v2 / over lightly)\n\n"
    )
    header = [
        "image px",
        "per-sample torchvision v2, 1 thread",
        "per-sample lightly SimCLRTransform, 1 thread",
        f"batched BatchViews (batch {batch}), 1 thread",
        f"batched, {threads} threads",
        f"batched, eager ops (no CPU kernel), {threads} threads",
        f"batched, bfloat16 views, {threads} threads",
    ]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
