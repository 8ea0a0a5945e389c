"""MNIST-M-style colour domains: grayscale images blended with crops of real colour photographs.

Ganin et al. (JMLR 2016, Sec. 5.2.2) built MNIST-M by blending each MNIST digit over a patch randomly
extracted from the colour photos of BSDS500: every output channel is the absolute difference between
the photo patch and the digit, ``|patch_c - digit|``. The same recipe is applied here with the real
photographs that ship inside scikit-image and scikit-learn (no download), to Fashion-MNIST
(:class:`FashionMNISTMDataModule`) and scikit-learn's digits (:class:`DigitsMDataModule`); use them
alone or as the target domain of a
:class:`~lightning_tl.datamodules.domain.DomainAdaptationDataModule`. :func:`blend_with_photos`
does the blending for any uint8 grayscale batch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lightning_tl.augment.counter_rng import mix_seed
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages, resize_uint8
from lightning_tl.datamodules.digits import DigitsDataModule, load_digits
from lightning_tl.datamodules.fashion_mnist import FashionMNISTDataModule, load_fashion_mnist

#: Natural colour photographs in scikit-image (bundled, no download) and scikit-learn's sample images.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@functools.lru_cache(maxsize=4)
def load_photos(scale: float = 0.5) -> tuple[Tensor, ...]:
    """The photographs as uint8 (3, H, W) tensors, downscaled by ``scale`` (antialiased).

    Downscaling puts more of a scene (edges, textures) into a 28 px crop; at full resolution most
    crops of these 300-1000 px photos are nearly flat. Cached: the photos are decoded once per process.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"photo scale must be in (0, 1], got {scale}")
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    sample = load_sample_images()
    arrays += [
        sample.images[sample.filenames.index(f)] for f in sample.filenames if f.endswith(SKLEARN_PHOTOS)
    ]
    photos = []
    for array in arrays:
        photo = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
        if scale < 1:
            h, w = (max(1, round(s * scale)) for s in photo.shape[1:])
            photo = torch.nn.functional.interpolate(
                photo[None].float(), size=(h, w), mode="bilinear", antialias=True
            )[0]
            photo = photo.round().clamp(0, 255).to(torch.uint8)
        photos.append(photo)
    return tuple(photos)


def blend_with_photos(images: Tensor, photos: tuple[Tensor, ...] | list[Tensor], seed: int) -> Tensor:
    """MNIST-M blending: ``out[:, c] = |patch[:, c] - image|`` with a random photo crop per image.

    Image ``i`` gets photo ``k_i`` and a crop at a random position, all drawn from one generator
    seeded with ``seed``, so the result is a pure function of (images, photos, seed).

    Args:
        images: uint8 (N, 1, H, W) grayscale images.
        photos: uint8 (3, H_p, W_p) colour photos, each at least H x W.
        seed: seed of the photo choices and crop positions.

    Returns:
        uint8 (N, 3, H, W).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(
            f"images must be uint8 grayscale (N, 1, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if not photos:
        raise ValueError("need at least one photo to blend with")
    n, _, h, w = images.shape
    for k, p in enumerate(photos):
        if p.dtype != torch.uint8 or p.ndim != 3 or p.shape[0] != 3 or p.shape[1] < h or p.shape[2] < w:
            raise ValueError(
                f"photo {k} must be uint8 (3, >= {h}, >= {w}) to crop {h}x{w} patches, got "
                f"{p.dtype} {tuple(p.shape)}"
            )
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(len(photos), (n,), generator=g)  # (N,)
    unit = torch.rand(n, 2, generator=g, dtype=torch.float64)  # (N, 2) crop position in [0, 1)
    out = torch.empty((n, 3, h, w), dtype=torch.uint8)
    for k, photo in enumerate(photos):
        members = torch.nonzero(which == k).flatten()  # (M,)
        if members.numel() == 0:
            continue
        tops = (unit[members, 0] * (photo.shape[1] - h + 1)).long()  # (M,)
        lefts = (unit[members, 1] * (photo.shape[2] - w + 1)).long()  # (M,)
        rows = tops[:, None] + torch.arange(h)  # (M, H)
        cols = lefts[:, None] + torch.arange(w)  # (M, W)
        patches = photo[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)  # (M, 3, H, W)
        out[members] = (patches.short() - images[members].short()).abs().to(torch.uint8)
    return out


def blend_splits(
    splits: Mapping[str, ImageSource], image_size: int, seed: int, photo_scale: float
) -> dict[str, ImageSource]:
    """Blend every in-memory split, each with its own seed ``mix_seed(seed, split)``; labels kept."""
    photos = load_photos(photo_scale)
    smallest = min(min(p.shape[1:]) for p in photos)
    if image_size > smallest:
        raise ValueError(
            f"image_size={image_size} is larger than the smallest photo ({smallest} px); lower it"
        )
    out: dict[str, ImageSource] = {}
    for name, source in splits.items():
        if not isinstance(source, InMemoryImages):
            raise TypeError(f"blending needs in-memory images, split {name!r} is {type(source).__name__}")
        images = resize_uint8(source.images, image_size)  # (N, 1, S, S)
        blended = blend_with_photos(images, photos, mix_seed(seed, SPLIT_IDS.get(name, len(SPLIT_IDS))))
        out[name] = InMemoryImages(blended, source.labels)
    return out


class PhotoBlended:
    """Mixin of the MNIST-M-style datamodules: RGB images blended with photo crops, ``blend_seed``
    and ``photo_scale`` checked and kept; put it before the plain datamodule in the bases."""

    image_size: int
    save_hyperparameters: Any

    def __init__(self, *args: Any, blend_seed: int = 0, photo_scale: float = 0.5, **kwargs: Any) -> None:
        if blend_seed < 0:
            raise ValueError(f"blend_seed must be >= 0, got {blend_seed}")
        if not 0 < photo_scale <= 1:
            raise ValueError(f"photo_scale must be in (0, 1], got {photo_scale}")
        super().__init__(*args, **kwargs)
        self.blend_seed = blend_seed
        self.photo_scale = photo_scale
        self.save_hyperparameters()

    def _native_channels(self) -> int:
        return 3

    def _blend(self, plain: Mapping[str, ImageSource]) -> dict[str, ImageSource]:
        return blend_splits(plain, self.image_size, self.blend_seed, self.photo_scale)


class FashionMNISTMDataModule(PhotoBlended, FashionMNISTDataModule):
    """Fashion-MNIST-M: Fashion-MNIST garments blended with real colour photo crops, MNIST-M style.

    Same splits, labels and arguments as :class:`FashionMNISTDataModule` (``seed`` fixes the splits);
    images are RGB (3 channels). ``blend_seed`` fixes which photo and crop each image gets, so with
    equal ``seed`` the source image ``i`` of a split and its blended version ``i`` correspond, as
    MNIST-M's images correspond to MNIST's. Normalisation: exact statistics of the blended train split.

    Args:
        blend_seed: seed of the photo crops (per split).
        photo_scale: photos are downscaled by this factor before cropping (see :func:`load_photos`).
        other arguments: see :class:`FashionMNISTDataModule`.
    """

    def _load_splits(self) -> dict[str, ImageSource]:
        return self._blend(load_fashion_mnist(self.root, self.image_size, self.val_size, self.seed))


class DigitsMDataModule(PhotoBlended, DigitsDataModule):
    """Digits-M: scikit-learn's digits blended with real colour photo crops, MNIST-M style.

    Same splits, labels and arguments as :class:`DigitsDataModule`; images are RGB, blended at
    ``image_size`` (the digits are upsampled first). See :class:`FashionMNISTMDataModule` for
    ``blend_seed`` and ``photo_scale``.
    """

    def _load_splits(self) -> dict[str, ImageSource]:
        return self._blend(load_digits(self.image_size, self.holdout, self.seed))
