"""Image sources (uint8 images + integer labels) and the dataset that applies a seeded transform.

A *source* is anything with ``len()``, ``image(i) -> uint8 (C, H, W)`` and ``label(i) -> int``:
:class:`InMemoryImages` holds one (N, C, H, W) tensor; the image-folder source decodes files lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_tl.augment.batch import SeededBatch


class ImageSource(Protocol):
    """Read-only indexable collection of uint8 (C, H, W) images with integer labels (-1: none)."""

    def __len__(self) -> int: ...

    def image(self, index: int) -> Tensor: ...

    def label(self, index: int) -> int: ...


class InMemoryImages:
    """Images (N, C, H, W) uint8 and labels (N,) int64 held in memory.

    Args:
        images: uint8 tensor (N, C, H, W).
        labels: integer tensor (N,).
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def image(self, index: int) -> Tensor:
        return self.images[index]  # (C, H, W)

    def label(self, index: int) -> int:
        return int(self.labels[index])

    def subset(self, indices: Tensor) -> InMemoryImages:
        """A new source holding the rows ``indices`` (a copy, so the full tensor can be freed)."""
        return InMemoryImages(self.images[indices].clone(), self.labels[indices].clone())


class AugmentedDataset(Dataset):
    """``source`` item -> ``(transform(image), label)``, with per-sample seeded randomness.

    The key is either an ``int`` (the transform draws from the global RNG, as usual) or an
    ``(index, sample_seed)`` pair from :class:`~lightning_tl.datamodules.sampling.SeededSampler`:
    then the transform runs under ``torch.random.fork_rng`` with the CPU generator seeded to
    ``sample_seed``, so the result depends on nothing but the seed, and the caller's RNG state is
    left untouched. (Transforms run on CPU tensors and draw from the CPU generator only.)
    """

    def __init__(self, source: ImageSource, transform: Callable[[Tensor], Any]) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        if isinstance(key, tuple):
            index, seed = key
            image = self.source.image(index)
            with torch.random.fork_rng(devices=[]):
                # Only the CPU generator: torch.manual_seed would also reseed (and not restore) the
                # CUDA generators of the training process when num_workers=0, and costs ~100x more.
                torch.default_generator.manual_seed(seed)
                out = self.transform(image)
        else:
            index = key
            out = self.transform(self.source.image(index))
        return out, self.source.label(index)


class RawViewDataset(Dataset):
    """``(index, sample_seed)`` -> :class:`~lightning_tl.augment.SeededBatch`: the image after ``steps``.

    ``steps`` are fixed (no randomness).

    A plain ``int`` key (a sampler other than ``SeededSampler``) takes its seed from the global RNG,
    as :class:`AugmentedDataset`'s transforms do then.

    The data path of on-device views: workers only read (and, for files, decode and resize) images;
    :class:`~lightning_tl.augment.batch_views.BatchViews` makes all views of a batch at once.
    """

    def __init__(self, source: ImageSource, steps: Callable[[Tensor], Tensor] | None = None) -> None:
        self.source = source
        self.steps = steps

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> SeededBatch:
        if isinstance(key, tuple):
            index, seed = key
        else:  # a plain sampler (e.g. Lightning's overfit_batches): the seed comes from the global RNG
            index, seed = key, int(torch.randint(0, 2**62, ()))
        image = self.source.image(index)
        if self.steps is not None:
            image = self.steps(image)
        return SeededBatch(image, self.source.label(index), seed)


def channel_mean_std(images: Tensor) -> tuple[list[float], list[float]]:
    """Exact per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units.

    Uses a 256-bin histogram per channel, so no float copy of the data is made.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    values = torch.arange(256, dtype=torch.float64) / 255.0  # (256,)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()  # (256,)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return means, stds


def resize_uint8(images: Tensor, size: int, chunk: int = 8192) -> Tensor:
    """Resize uint8 images (N, C, H, W) to (N, C, size, size) with antialiased bilinear interpolation.

    Works in chunks of ``chunk`` images, so only one chunk is ever held as float.
    """
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)  # (N, C, size, size)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = torch.nn.functional.interpolate(part, size=(size, size), mode="bilinear", antialias=True)
        out[start : start + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


class SeededItems(Dataset):
    """``(x, y)`` items of ``dataset`` -> :class:`~lightning_tl.augment.SeededBatch` ``(x, y, sample_seed)``.

    Supervised items whose batch is mixed on the device (mixup, CutMix, noise) carry their seeds
    with them. With a plain ``int`` key (a sampler other than ``SeededSampler``) the seed is drawn
    from the global RNG, as the per-sample transforms then do.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> SeededBatch:
        image, label = self.dataset[key]
        seed = key[1] if isinstance(key, tuple) else int(torch.randint(0, 2**62, ()))
        return SeededBatch(image, label, seed)
