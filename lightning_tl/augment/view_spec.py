"""One view's random recipe (:class:`ViewSpec`) and the layout of its drawn parameters.

A :class:`ViewSpec` holds the distributions of one view (crop, flip, colour jitter, grayscale, blur,
solarisation); :mod:`~lightning_tl.augment.views` builds lists of them (SimCLR, BYOL, DINO, MoCo v2
recipes), and both executors draw from it: the per-sample torchvision pipeline
(:func:`~lightning_tl.augment.transforms.view_transform`) and the batched one
(:class:`~lightning_tl.augment.batch_views.BatchViews`). The batched executor packs each view's
drawn parameters into one row of a float table; :data:`PARAM_COLUMNS` is the single description of
that row, read by the Python code (:data:`PARAM`) and by the compiled CPU kernel, which gets the
column indices as ``-D`` macros (:func:`c_defines`) when it is compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The columns of a view's parameter row, in order. Jitter factors and order are 4 columns each.
PARAM_COLUMNS: tuple[tuple[str, int], ...] = (
    ("top", 1),  # crop box, in source pixels (integer-valued)
    ("left", 1),
    ("height", 1),
    ("width", 1),
    ("flip", 1),  # 1: flip horizontally
    ("jitter", 1),  # 1: apply the colour jitter
    ("factors", 4),  # brightness, contrast, saturation factors and hue shift
    ("order", 4),  # the jitter ops (0..3 as in "factors") in the order they are applied
    ("gray", 1),  # 1: convert to grayscale (RGB views)
    ("blur", 1),  # 1: Gaussian blur
    ("sigma", 1),  # the blur's standard deviation in pixels
    ("solar", 1),  # 1: solarise
)


def _offsets() -> dict[str, int]:
    offsets, at = {}, 0
    for name, width in PARAM_COLUMNS:
        offsets[name] = at
        at += width
    return offsets


#: First column of each field of :data:`PARAM_COLUMNS`, e.g. ``PARAM["gray"] == 14``.
PARAM: dict[str, int] = _offsets()
#: Columns in a parameter row.
NUM_PARAMS: int = sum(width for _, width in PARAM_COLUMNS)


def c_defines() -> list[str]:
    """Compiler flags ``-DLTL_COL_<NAME>=<first column>`` and ``-DLTL_NUM_PARAMS=<n>`` for the CPU kernel."""
    flags = [f"-DLTL_COL_{name.upper()}={at}" for name, at in PARAM.items()]
    return [*flags, f"-DLTL_NUM_PARAMS={NUM_PARAMS}"]


@dataclass(frozen=True)
class ViewSpec:
    """The random recipe of one view (SimCLR, Chen et al. 2020, appendix A, by default).

    Args:
        size: output side in pixels.
        crop_scale: (min, max) area fraction of the random resized crop.
        crop_ratio: (min, max) aspect ratio of the crop, sampled log-uniformly.
        hflip_prob: probability of a horizontal flip.
        jitter_strength: s of ``ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)``; 0 turns jitter off.
        jitter: the four ``ColorJitter`` magnitudes (brightness, contrast, saturation, hue) when they
            are not SimCLR's multiples of one strength, e.g. BYOL's (0.4, 0.4, 0.2, 0.1); None: from
            ``jitter_strength``. Brightness, contrast and saturation factors are uniform in
            ``[max(0, 1 - m), 1 + m]``, the hue shift in ``[-m, m]`` (m <= 0.5).
        jitter_prob: probability of applying the jitter (its four ops in a random order).
        grayscale_prob: probability of converting an RGB view to grayscale.
        blur_prob: probability of a Gaussian blur (sigma uniform in ``blur_sigma``).
        blur_kernel: odd kernel side of the blur.
        blur_sigma: (min, max) blur standard deviation in pixels.
        solarize_prob: probability of inverting the pixels >= 0.5 (BYOL's solarisation).
    """

    size: int
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    jitter_strength: float = 0.5
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_kernel: int = 3
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0
    jitter: tuple[float, float, float, float] | None = None

    @property
    def jitter_magnitudes(self) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation, hue) magnitudes of the colour jitter."""
        if self.jitter is not None:
            return self.jitter
        s = self.jitter_strength
        return (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)

    @property
    def jitters(self) -> bool:
        """Whether the colour jitter can change a view (a magnitude > 0 and ``jitter_prob`` > 0)."""
        return any(m > 0 for m in self.jitter_magnitudes) and self.jitter_prob > 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"ViewSpec.size must be a positive number of pixels, got {self.size}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        if not 0 <= self.jitter_strength <= 2.5:
            raise ValueError(f"jitter_strength must be in [0, 2.5], got {self.jitter_strength}")
        if self.jitter is not None:
            if len(self.jitter) != 4 or any(m < 0 for m in self.jitter) or self.jitter[3] > 0.5:
                raise ValueError(
                    "jitter must be 4 magnitudes >= 0 (brightness, contrast, saturation, hue <= 0.5), "
                    f"e.g. (0.4, 0.4, 0.2, 0.1); got {self.jitter}"
                )
            object.__setattr__(self, "jitter", tuple(float(m) for m in self.jitter))
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd number, got {self.blur_kernel}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")
        probs = {
            "hflip_prob": self.hflip_prob,
            "jitter_prob": self.jitter_prob,
            "grayscale_prob": self.grayscale_prob,
            "blur_prob": self.blur_prob,
            "solarize_prob": self.solarize_prob,
        }
        for name, p in probs.items():
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def blur_kernel_size(image_size: int) -> int:
    """Odd Gaussian kernel size of about 10% of ``image_size`` (SimCLR appendix A), at least 3."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def check_crop_scale(crop_scale: Sequence[float], name: str = "crop_scale") -> None:
    """Raise ``ValueError`` unless ``crop_scale`` is (min, max) with 0 < min <= max <= 1; the error names
    the argument ``name``."""
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(
            f"{name} must be (min, max) area fractions with 0 < min <= max <= 1, e.g. (0.08, 1.0); "
            f"got {tuple(crop_scale)}"
        )


def check_jitter_strength(jitter_strength: float) -> None:
    """Raise ``ValueError`` unless 0 <= ``jitter_strength`` <= 2.5 (hue jitter 0.2s must be <= 0.5)."""
    if not 0 <= jitter_strength <= 2.5:
        raise ValueError(
            f"jitter_strength must be in [0, 2.5] (0 disables colour jitter; SimCLR uses 0.5 on CIFAR, "
            f"1.0 on ImageNet), got {jitter_strength}"
        )
