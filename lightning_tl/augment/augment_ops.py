"""The image operations of the AutoAugment family on uint8 (C, H, W) tensors, with timm's level scale.

Each operation takes a *level* in [0, ``LEVEL_DENOM``] (timm's ``Mx`` magnitude scale: level 10 is
the operation's maximum) and maps it to the argument of a torchvision v2 functional op: e.g.
``Rotate`` level 9 -> +-27 degrees, ``ShearX`` level 5 -> shear factor +-0.15. The level -> argument
rules and the operation names are those of the AutoAugment and RandAugment papers as implemented in
timm's ``auto_augment.py`` (``*Increasing`` variants grow in strength with the level, ``Posterize``
keeps 0-4 bits as in the TPU EfficientNet code, ``PosterizeOriginal`` 4-8 bits as in the paper).
Signs and other random choices come from torch's global generator only, so a caller that seeds it
(our datamodules seed it per sample) gets reproducible images. Works for 1- and 3-channel images of
any size; colour ops (``Color``, ``Desaturate``) leave 1-channel images unchanged.

References: E. D. Cubuk et al., "AutoAugment: Learning Augmentation Policies from Data", CVPR 2019,
arXiv:1805.09501; "RandAugment: Practical automated data augmentation with a reduced search space",
NeurIPS 2020, arXiv:1909.13719; D. Hendrycks et al., "AugMix", ICLR 2020, arXiv:1912.02781.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode

#: Level of the strongest setting of every operation (timm's ``_LEVEL_DENOM``).
LEVEL_DENOM = 10.0


@dataclass(frozen=True)
class OpParams:
    """Settings shared by the geometric ops: fill value of uncovered pixels, interpolation, translate."""

    fill: float = 128.0  # timm fills with mid-grey (128, 128, 128)
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    translate_const: float = 250.0  # pixels at level 10 for TranslateX/TranslateY (absolute)
    translate_pct: float = 0.45  # fraction of the side at level 10 for TranslateXRel/TranslateYRel


def _sign() -> float:
    return -1.0 if bool(torch.rand(()) < 0.5) else 1.0


def _frac(level: float) -> float:
    return level / LEVEL_DENOM


# ----------------------------------------------------------------- level -> argument (timm's scale)
def _rotate(level: float, p: OpParams) -> float:
    return _sign() * _frac(level) * 30.0  # degrees in [-30, 30]


def _enhance(level: float, p: OpParams) -> float:
    return _frac(level) * 1.8 + 0.1  # blend factor in [0.1, 1.9]; 1 = unchanged


def _enhance_increasing(level: float, p: OpParams) -> float:
    return max(0.1, 1.0 + _sign() * _frac(level) * 0.9)  # 1 +- up to 0.9


def _shear(level: float, p: OpParams) -> float:
    return _sign() * _frac(level) * 0.3  # shear factor in [-0.3, 0.3]


def _translate_abs(level: float, p: OpParams) -> float:
    return _sign() * _frac(level) * p.translate_const


def _translate_rel(level: float, p: OpParams) -> float:
    return _sign() * _frac(level) * p.translate_pct


def _posterize(level: float, p: OpParams) -> int:
    return int(_frac(level) * 4)  # bits kept, 0..4 (stronger at low levels)


def _posterize_increasing(level: float, p: OpParams) -> int:
    return 4 - _posterize(level, p)  # 4..0 bits kept


def _posterize_original(level: float, p: OpParams) -> int:
    return _posterize(level, p) + 4  # 4..8 bits kept (the paper's range)


def _solarize(level: float, p: OpParams) -> int:
    return min(256, int(_frac(level) * 256))  # threshold 0..256 (stronger at low levels)


def _solarize_increasing(level: float, p: OpParams) -> int:
    return 256 - _solarize(level, p)


def _solarize_add(level: float, p: OpParams) -> int:
    return min(128, int(_frac(level) * 110))


def _minmax(low: float, high: float) -> Callable[[float, OpParams], float]:
    def level_to_arg(level: float, p: OpParams) -> float:
        return min(high, max(low, low + (high - low) * _frac(level)))

    return level_to_arg


# ----------------------------------------------------------------- operations on uint8 (C, H, W)
def _affine(img: Tensor, p: OpParams, **kwargs: object) -> Tensor:
    args = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0], **kwargs}
    return F.affine(img, **args, interpolation=p.interpolation, fill=p.fill)  # type: ignore[arg-type]


def _shear_op(axis: int) -> Callable[[Tensor, float, OpParams], Tensor]:
    def op(img: Tensor, factor: float, p: OpParams) -> Tensor:
        shear = [0.0, 0.0]
        shear[axis] = math.degrees(math.atan(factor))  # PIL's affine shear factor as an angle
        return _affine(img, p, shear=shear, center=[0, 0])

    return op


def _translate_op(axis: int, relative: bool) -> Callable[[Tensor, float, OpParams], Tensor]:
    def op(img: Tensor, amount: float, p: OpParams) -> Tensor:
        shift = [0.0, 0.0]
        shift[axis] = amount * img.shape[-1 - axis] if relative else amount  # width for x, height for y
        return _affine(img, p, translate=shift)

    return op


def _rotate_op(img: Tensor, degrees: float, p: OpParams) -> Tensor:
    return F.rotate(img, degrees, interpolation=p.interpolation, fill=p.fill)  # type: ignore[arg-type]


def _solarize_op(img: Tensor, threshold: int, p: OpParams) -> Tensor:
    return img if threshold > 255 else F.solarize(img, threshold)


def _solarize_add_op(img: Tensor, add: int, p: OpParams, threshold: int = 128) -> Tensor:
    """Add ``add`` to the pixels below ``threshold`` (clipped at 255); the others stay."""
    added = (img.to(torch.int16) + add).clamp_(0, 255).to(torch.uint8)
    return torch.where(img < threshold, added, img)


def _desaturate_op(img: Tensor, factor: float, p: OpParams) -> Tensor:
    return F.adjust_saturation(img, min(1.0, max(0.0, 1.0 - factor)))


def _blur_op(img: Tensor, sigma: float, p: OpParams) -> Tensor:
    kernel = 2 * math.ceil(3 * sigma) + 1  # covers +-3 sigma
    return F.gaussian_blur(img, [kernel, kernel], [sigma, sigma])


def _blur_rand_op(img: Tensor, factor: float, p: OpParams) -> Tensor:
    high = max(0.1, 2.0 * factor)
    sigma = 0.1 + (high - 0.1) * float(torch.rand(()))  # uniform in [0.1, 2 * factor]
    return _blur_op(img, sigma, p)


def _plain(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor, None, OpParams], Tensor]:
    return lambda img, _arg, _p: fn(img)


def _factor(fn: Callable[[Tensor, float], Tensor]) -> Callable[[Tensor, float, OpParams], Tensor]:
    return lambda img, factor, _p: fn(img, factor)


@dataclass(frozen=True)
class OpDef:
    """One operation: ``apply(img, arg, params)`` and ``level_to_arg(level, params)`` (None: no argument)."""

    apply: Callable[..., Tensor]
    level_to_arg: Callable[[float, OpParams], float | int] | None
    base: str  # the operation without its level-scale variant, e.g. "Posterize" for "PosterizeIncreasing"


_enh, _enh_inc = _enhance, _enhance_increasing
OPS: dict[str, OpDef] = {
    "AutoContrast": OpDef(_plain(F.autocontrast), None, "AutoContrast"),
    "Equalize": OpDef(_plain(F.equalize), None, "Equalize"),
    "Invert": OpDef(_plain(F.invert), None, "Invert"),
    "Rotate": OpDef(_rotate_op, _rotate, "Rotate"),
    "Posterize": OpDef(_factor(F.posterize), _posterize, "Posterize"),
    "PosterizeIncreasing": OpDef(_factor(F.posterize), _posterize_increasing, "Posterize"),
    "PosterizeOriginal": OpDef(_factor(F.posterize), _posterize_original, "Posterize"),
    "Solarize": OpDef(_solarize_op, _solarize, "Solarize"),
    "SolarizeIncreasing": OpDef(_solarize_op, _solarize_increasing, "Solarize"),
    "SolarizeAdd": OpDef(_solarize_add_op, _solarize_add, "SolarizeAdd"),
    "Color": OpDef(_factor(F.adjust_saturation), _enh, "Color"),
    "ColorIncreasing": OpDef(_factor(F.adjust_saturation), _enh_inc, "Color"),
    "Contrast": OpDef(_factor(F.adjust_contrast), _enh, "Contrast"),
    "ContrastIncreasing": OpDef(_factor(F.adjust_contrast), _enh_inc, "Contrast"),
    "Brightness": OpDef(_factor(F.adjust_brightness), _enh, "Brightness"),
    "BrightnessIncreasing": OpDef(_factor(F.adjust_brightness), _enh_inc, "Brightness"),
    "Sharpness": OpDef(_factor(F.adjust_sharpness), _enh, "Sharpness"),
    "SharpnessIncreasing": OpDef(_factor(F.adjust_sharpness), _enh_inc, "Sharpness"),
    "ShearX": OpDef(_shear_op(0), _shear, "ShearX"),
    "ShearY": OpDef(_shear_op(1), _shear, "ShearY"),
    "TranslateX": OpDef(_translate_op(0, False), _translate_abs, "TranslateX"),
    "TranslateY": OpDef(_translate_op(1, False), _translate_abs, "TranslateY"),
    "TranslateXRel": OpDef(_translate_op(0, True), _translate_rel, "TranslateX"),
    "TranslateYRel": OpDef(_translate_op(1, True), _translate_rel, "TranslateY"),
    "Desaturate": OpDef(_desaturate_op, _minmax(0.5, 1.0), "Desaturate"),
    "GaussianBlur": OpDef(_blur_op, _minmax(0.1, 2.0), "GaussianBlur"),
    "GaussianBlurRand": OpDef(_blur_rand_op, _minmax(0.0, 1.0), "GaussianBlur"),
}


def check_op(name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and listing the known operations if it is not one."""
    if name not in OPS:
        raise ValueError(f"unknown augmentation operation {name!r}; valid operations: {', '.join(OPS)}")


def apply_op(img: Tensor, name: str, level: float, params: OpParams = OpParams()) -> Tensor:
    """Apply operation ``name`` at ``level`` (clipped to >= 0) to a uint8 (C, H, W) image."""
    op = OPS[name]
    arg = op.level_to_arg(max(0.0, level), params) if op.level_to_arg is not None else None
    return op.apply(img, arg, params)
