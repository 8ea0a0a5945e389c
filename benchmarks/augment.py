"""Table (b): two-view SimCLR augmentation throughput, images/s in one process (= per worker).

Fashion-MNIST train images (uint8 tensors), each turned into two SimCLR views: ours (the
datamodule's seeded per-sample path) and the same torchvision v2 pipeline called directly
(the cost of our per-sample seeding is the difference).
"""

from __future__ import annotations

import time

import torch

from benchmarks._timing import markdown_table
from lightning_tl.datamodules import FashionMNISTDataModule


def _rate(fn, items: int) -> float:  # type: ignore[no-untyped-def]
    fn(min(items, 100))  # warm-up
    start = time.perf_counter()
    fn(items)
    return items / (time.perf_counter() - start)


def run(items: int = 3000, sizes: tuple[int, ...] = (28, 32)) -> str:
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    rows = []
    for size in sizes:
        data = FashionMNISTDataModule(num_views=2, image_size=size, batch_size=256)
        data.setup("fit")
        loader = data.train_dataloader()
        dataset = loader.dataset
        keys = list(iter(loader.sampler))  # (index, sample_seed) pairs, as the loader draws them
        transform = dataset.transform  # the two-view MultiViewTransform
        source = dataset.source

        def ours(n: int, dataset=dataset, keys=keys) -> None:  # type: ignore[no-untyped-def]
            for key in keys[:n]:
                dataset[key]

        def plain(n: int, transform=transform, source=source) -> None:  # type: ignore[no-untyped-def]
            for i in range(n):
                transform(source.image(i))

        rows.append([size, f"{_rate(ours, items):.0f}", f"{_rate(plain, items):.0f}"])
    title = (
        f"Two-view SimCLR augmentation "
        "(random resized crop, flip, colour jitter, grayscale, blur at >= 32 px) "
        f"of Fashion-MNIST uint8 images, one thread, {items} images\n\n"
    )
    return title + markdown_table(
        ["image px", "ours: seeded per-sample (img/s)", "torchvision v2 pipeline alone (img/s)"], rows
    )


if __name__ == "__main__":
    print(run())
