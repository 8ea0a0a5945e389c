"""Captioned image sources for CLIP: the built-in data sets captioned from class-name templates.

A *captioned source* is an :class:`~lightning_tl.datamodules.datasets.ImageSource` (``image(i)``,
``label(i)``) that also has ``captions(i) -> list[str]``; training picks one caption per sample
(:func:`pick_caption`). Files of your own pairs are read by
:class:`~lightning_tl.datamodules.caption_file.CaptionFile`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_tl.datamodules.datasets import InMemoryImages

#: Training caption templates of the built-in data sets (several per class, as alt-text varies).
FASHION_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of the {}.",
    "a grayscale picture of a {}, a piece of clothing.",
    "a product photo of a {}.",
    "a small photo of the {}.",
)
FASHION_CAPTION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DIGIT_TEMPLATES = (
    "a photo of the digit {}.",
    "a handwritten {}.",
    "the number {}, written by hand.",
    "a low resolution image of a handwritten digit {}.",
)
DIGIT_CAPTION_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class CaptionedImages:
    """In-memory images with labels and class-name captions from ``templates`` (``template.format(name)``)."""

    def __init__(self, images: InMemoryImages, names: Sequence[str], templates: Sequence[str]) -> None:
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {list(templates)}")
        self.data = images
        self.names = list(names)
        self.templates = list(templates)

    def __len__(self) -> int:
        return len(self.data)

    def image(self, index: int) -> Tensor:
        return self.data.image(index)  # (C, H, W) uint8

    def label(self, index: int) -> int:
        return self.data.label(index)

    def captions(self, index: int) -> list[str]:
        name = self.names[self.label(index)]
        return [t.format(name) for t in self.templates]

    def subset(self, indices: Tensor) -> CaptionedImages:
        return CaptionedImages(self.data.subset(indices), self.names, self.templates)


def pick_caption(captions: list[str], generator: torch.Generator | None = None) -> str:
    """One caption, uniformly at random (from ``generator`` or torch's global RNG)."""
    if len(captions) == 1:
        return captions[0]
    return captions[int(torch.randint(len(captions), (), generator=generator))]
