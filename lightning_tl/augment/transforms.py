"""Image transforms on uint8 (C, H, W) tensors: the SimCLR view recipe, multi-view, train and eval.

Every pipeline takes a uint8 image tensor (C, H, W) with C in {1, 3} and ends with
``ToDtype(float32, scale=True)`` + ``Normalize(mean, std)``, returning float32 (C, size, size).
All randomness comes from torch's global RNG, so a caller that seeds it per sample (see
:class:`~lightning_tl.datamodules.datasets.AugmentedDataset`) gets reproducible views.

Reference: T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations" (SimCLR), ICML 2020, arXiv:2002.05709, appendix A.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from lightning_tl.augment.view_spec import ViewSpec
from lightning_tl.augment.views import SimCLRViews

#: ImageNet statistics, the usual choice for images fed to ImageNet-pretrained backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MultiViewTransform:
    """Apply each transform to the same image and return the list of results (one per view).

    With ``[t] * n`` the n views are independent draws of the same random recipe, as in SimCLR
    ("we sample two separate data augmentation operators from the same family", Chen et al. 2020).

    Example::

        >>> views = MultiViewTransform([v2.Identity(), v2.Identity()])(torch.zeros(1, 4, 4))
        >>> len(views)
        2
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        if len(transforms) == 0:
            raise ValueError("MultiViewTransform needs at least one transform, got an empty sequence")
        self.transforms = list(transforms)

    def __call__(self, image: Any) -> list[Any]:
        return [transform(image) for transform in self.transforms]

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}([\n  {inner}\n])"


class RepeatChannels:
    """Repeat a 1-channel uint8 image to ``channels`` channels; other images pass unchanged.

    Used with ``rgb=True`` so grayscale data sets feed RGB-only (e.g. ImageNet-pretrained) backbones.
    """

    def __init__(self, channels: int = 3) -> None:
        self.channels = channels

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[-3] == 1 and self.channels != 1:
            return image.repeat(self.channels, 1, 1)  # (channels, H, W)
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


def _check_image_size(image_size: int) -> None:
    if image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")


def normalize(channels: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """uint8 -> float32 in [0, 1] -> ``(x - mean) / std``; a 1-element mean/std is repeated per channel."""
    _check_channels(channels)
    mean, std = tuple(mean), tuple(std)
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need 1 or {channels} values for {channels}-channel images, "
            f"got mean={mean} and std={std}"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be positive, got {std}")
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def view_transform(
    spec: ViewSpec, channels: int, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)
) -> v2.Compose:
    """Per-sample torchvision v2 pipeline drawing one view of a uint8 (C, H, W) image with ``spec``.

    Steps, each present only when its probability is > 0: random resized crop (antialiased),
    horizontal flip, colour jitter (brightness/contrast on 1 channel), grayscale (RGB), Gaussian
    blur, solarisation; then ``ToDtype(float32, scale=True)`` and ``Normalize(mean, std)``.
    """
    _check_channels(channels)
    steps: list[Callable[[Any], Any]] = [
        v2.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True)
    ]
    if spec.hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(p=spec.hflip_prob))
    if spec.jitters:
        b, c, s, h = spec.jitter_magnitudes
        if channels == 3:
            jitter = v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)
        else:
            jitter = v2.ColorJitter(brightness=b, contrast=c)
        steps.append(v2.RandomApply([jitter], p=spec.jitter_prob))
    if channels == 3 and spec.grayscale_prob > 0:
        steps.append(v2.RandomGrayscale(p=spec.grayscale_prob))
    if spec.blur_prob > 0:
        blur = v2.GaussianBlur(spec.blur_kernel, sigma=spec.blur_sigma)
        steps.append(v2.RandomApply([blur], p=spec.blur_prob))
    if spec.solarize_prob > 0:  # threshold in the uint8 range: x >= 128 <=> x / 255 >= 0.5
        steps.append(v2.RandomSolarize(threshold=128, p=spec.solarize_prob))
    steps.append(normalize(channels, mean, std))
    return v2.Compose(steps)


def simclr_view_transform(
    image_size: int,
    channels: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    jitter_strength: float = 0.5,
    blur: bool | None = None,
    hflip: bool = True,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> v2.Compose:
    """One random SimCLR view of a uint8 (C, H, W) image, as float32 (C, image_size, image_size).

    The recipe of :class:`~lightning_tl.augment.SimCLRViews` run by :func:`view_transform`.

    Args:
        image_size: output side in pixels.
        channels: 1 or 3, the channel count of the input (and output).
        crop_scale: (min, max) fraction of the image area kept by the random crop.
        jitter_strength: colour distortion strength s, in [0, 2.5] (hue 0.2s must stay <= 0.5).
        blur: Gaussian blur on, off, or ``None`` for automatic (on when ``image_size >= 32``).
        hflip: random horizontal flip.
        mean, std: normalisation constants, 1 value (repeated) or ``channels`` values.
    """
    _check_image_size(image_size)
    _check_channels(channels)
    recipe = SimCLRViews(crop_scale=crop_scale, jitter_strength=jitter_strength, blur=blur, hflip=hflip)
    return view_transform(recipe.specs(image_size, channels)[0], channels, mean, std)


def light_train_transform(
    image_size: int,
    channels: int,
    hflip: bool = True,
    mean: Sequence[float] = (0.5,),
    std: Sequence[float] = (0.5,),
) -> v2.Compose:
    """Supervised train augmentation for a uint8 (C, image_size, image_size) image.

    Random ``image_size`` crop after zero padding of ``image_size // 8`` pixels (at least 1) per side
    (the standard CIFAR recipe: 4 px at 32 px), random horizontal flip when ``hflip``, then
    ``ToDtype`` + ``Normalize``.
    """
    return v2.Compose([*light_augment_steps(image_size, hflip), normalize(channels, mean, std)])


def light_augment_steps(image_size: int, hflip: bool = True) -> list[Callable[[Any], Any]]:
    """The uint8 -> uint8 part of :func:`light_train_transform`: padded random crop, optional flip."""
    _check_image_size(image_size)
    steps: list[Callable[[Any], Any]] = [v2.RandomCrop(image_size, padding=max(1, image_size // 8))]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    return steps


def eval_transform(
    channels: int, mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,)
) -> v2.Compose:
    """Deterministic evaluation transform: ``ToDtype(float32, scale=True)`` + ``Normalize``."""
    return normalize(channels, mean, std)
