"""scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes): the embedded default data set."""

from __future__ import annotations

from typing import Any

import torch

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages, resize_uint8
from lightning_tl.datamodules.splits import check_holdout, fraction_to_count, stratified_split


def load_digits(
    image_size: int | None = 16, holdout: tuple[float, float] = (0.15, 0.15), seed: int = 0
) -> dict[str, InMemoryImages]:
    """scikit-learn's digits as uint8 "train" / "val" / "test" sources, upsampled to ``image_size``.

    Values 0..16 are scaled to 0..255; ``holdout`` = (val, test) fractions, stratified by class and
    fixed by ``seed``. Shared by :class:`DigitsDataModule`, digits-M and the captioned digits.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    val_fraction, test_fraction = check_holdout(holdout)
    digits = sklearn_digits()
    images = torch.from_numpy(digits.images)  # (N, 8, 8) float64 in [0, 16]
    images = (images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
    images = resize_uint8(images, image_size or DigitsDataModule.NATIVE_SIZE)  # (N, 1, S, S)
    labels = torch.from_numpy(digits.target).long()  # (N,)
    n = labels.numel()
    sizes = [fraction_to_count(val_fraction, n), fraction_to_count(test_fraction, n)]
    train, val, test = stratified_split(labels, sizes, seed=seed)
    data = InMemoryImages(images, labels)
    return {"train": data.subset(train), "val": data.subset(val), "test": data.subset(test)}


class DigitsDataModule(VisionDataModule):
    """The UCI handwritten digits shipped inside scikit-learn (``sklearn.datasets.load_digits``).

    1,797 grayscale 8x8 images with values 0..16, scaled to uint8 0..255 and upsampled (bilinear) to
    ``image_size`` (default 16: random crops of 8 px images keep too little of the digit). The
    train/val/test split is stratified by class and fixed by ``seed``. Normalisation constants are
    the exact mean/std of the train split. Nothing is ever downloaded.

    Horizontal flips are off unless a recipe turns them on (``hflip: true``): a mirrored digit is
    often another glyph (2 vs S/5), unlike the objects of natural-image data sets.

    Args:
        holdout: (val, test) fractions of the 1,797 images (stratified).
        image_size: side after upsampling; ``None`` keeps 8.
        other arguments: see :class:`VisionDataModule` (``views``, ``augment``, ``batch_size``, ...).

    Example::

        >>> dm = DigitsDataModule(batch_size=32)
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), y.dtype
        ((32, 1, 16, 16), torch.int64)
    """

    NATIVE_SIZE = 8
    NATIVE_CHANNELS = 1
    default_hflip = False

    def __init__(
        self, *, holdout: tuple[float, float] = (0.15, 0.15), image_size: int | None = 16, **kwargs: Any
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.holdout = check_holdout(holdout)
        self.save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _load_splits(self) -> dict[str, ImageSource]:
        return dict(load_digits(self.image_size, self.holdout, self.seed))
