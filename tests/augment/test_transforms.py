"""Per-sample executors: a ViewSpec's torchvision pipeline (SimCLR's and per-op jitter recipes), multi-view
wrapper, the supervised and eval transforms."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from lightning_tl.augment import (
    BYOLViews,
    MultiViewTransform,
    ViewSpec,
    simclr_view_transform,
    view_transform,
)
from lightning_tl.augment.transforms import RepeatChannels, eval_transform, light_train_transform
from lightning_tl.augment.view_spec import blur_kernel_size


def _types(compose: v2.Compose) -> list[type]:
    """Transform classes in a (nested) Compose/RandomApply, in order."""
    out: list[type] = []
    for t in compose.transforms:
        out.append(type(t))
        if isinstance(t, (v2.Compose, v2.RandomApply)):
            out += _types(t)
    return out


def _jitter(compose: v2.Compose) -> v2.ColorJitter:
    apply = next(t for t in compose.transforms if isinstance(t, v2.RandomApply) and "ColorJitter" in repr(t))
    return apply.transforms[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_view_shape_dtype_and_normalisation(channels: int) -> None:
    image = torch.randint(0, 256, (channels, 20, 24), dtype=torch.uint8)
    out = simclr_view_transform(16, channels, mean=(0.5,), std=(0.25,))(image)
    assert out.shape == (channels, 16, 16) and out.dtype == torch.float32
    assert out.min() >= -2.0 - 1e-6 and out.max() <= 2.0 + 1e-6  # (x - 0.5) / 0.25 with x in [0, 1]


def test_rgb_recipe_follows_the_paper() -> None:
    t = simclr_view_transform(64, 3, jitter_strength=1.0)
    types = _types(t)
    order = [
        v2.RandomResizedCrop,
        v2.RandomHorizontalFlip,
        v2.ColorJitter,
        v2.RandomGrayscale,
        v2.GaussianBlur,
    ]
    assert [k for k in types if k in order] == order
    jitter = _jitter(t)
    assert jitter.brightness == (pytest.approx(0.2), pytest.approx(1.8))  # 0.8 s
    assert jitter.hue == (pytest.approx(-0.2), pytest.approx(0.2))  # 0.2 s
    crop = t.transforms[0]
    assert crop.scale == (0.08, 1.0)
    jitter_apply = next(x for x in t.transforms if isinstance(x, v2.RandomApply) and "ColorJitter" in repr(x))
    assert jitter_apply.p == 0.8
    gray = next(x for x in t.transforms if isinstance(x, v2.RandomGrayscale))
    assert gray.p == 0.2
    blur_apply = next(x for x in t.transforms if isinstance(x, v2.RandomApply) and "GaussianBlur" in repr(x))
    assert blur_apply.p == 0.5
    blur = blur_apply.transforms[0]
    assert blur.kernel_size == (7, 7) and list(blur.sigma) == [0.1, 2.0]  # ~10% of 64 px, odd


def test_grayscale_recipe_jitters_brightness_contrast_only_and_has_no_grayscale() -> None:
    t = simclr_view_transform(32, 1)
    assert v2.RandomGrayscale not in _types(t)
    jitter = _jitter(t)
    assert jitter.saturation is None and jitter.hue is None
    assert jitter.brightness is not None and jitter.contrast is not None


def test_blur_auto_only_for_large_images_and_forced_flags() -> None:
    assert v2.GaussianBlur not in _types(simclr_view_transform(28, 1))
    assert v2.GaussianBlur in _types(simclr_view_transform(32, 1))
    assert v2.GaussianBlur in _types(simclr_view_transform(16, 1, blur=True))
    assert v2.GaussianBlur not in _types(simclr_view_transform(96, 3, blur=False))
    assert v2.RandomHorizontalFlip not in _types(simclr_view_transform(16, 1, hflip=False))
    assert v2.ColorJitter not in _types(simclr_view_transform(16, 3, jitter_strength=0))
    assert [blur_kernel_size(s) for s in (16, 32, 96, 224)] == [3, 3, 9, 23]


def _apply_p(compose: v2.Compose, kind: type) -> float:
    """Probability of the RandomApply wrapping a ``kind`` transform."""
    return next(
        t.p for t in compose.transforms if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], kind)
    )


def test_per_op_jitter_blur_and_solarisation_come_from_the_spec() -> None:
    first, second = (view_transform(spec, 3) for spec in BYOLViews().specs(64, channels=3))
    for t in (first, second):  # BYOL's ColorJitter(0.4, 0.4, 0.2, 0.1), not multiples of one strength
        jitter = _jitter(t)
        assert jitter.brightness == (pytest.approx(0.6), pytest.approx(1.4))
        assert jitter.contrast == (pytest.approx(0.6), pytest.approx(1.4))
        assert jitter.saturation == (pytest.approx(0.8), pytest.approx(1.2))
        assert jitter.hue == (pytest.approx(-0.1), pytest.approx(0.1))
        assert _apply_p(t, v2.ColorJitter) == 0.8
    assert _apply_p(first, v2.GaussianBlur) == 1.0 and _apply_p(second, v2.GaussianBlur) == 0.1
    assert v2.RandomSolarize not in _types(first)
    solarize = next(t for t in second.transforms if isinstance(t, v2.RandomSolarize))
    assert solarize.p == 0.2 and solarize.threshold == 128  # x >= 0.5 in [0, 1] units
    gray = view_transform(ViewSpec(16, jitter=(0.4, 0.3, 0.2, 0.1)), 1)
    jitter = _jitter(gray)  # one channel: brightness and contrast only
    assert jitter.brightness == (pytest.approx(0.6), pytest.approx(1.4)) and jitter.contrast[
        0
    ] == pytest.approx(0.7)
    assert jitter.saturation is None and jitter.hue is None
    off = view_transform(ViewSpec(16, jitter=(0.0, 0.0, 0.0, 0.0), hflip_prob=0.0, grayscale_prob=0.0), 3)
    assert _types(off) == [v2.RandomResizedCrop, v2.Compose, v2.ToDtype, v2.Normalize]  # crop only


def test_views_are_random_but_reproducible_under_a_seed() -> None:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    multi = MultiViewTransform([simclr_view_transform(32, 3)] * 3)
    torch.manual_seed(0)
    a = multi(image)
    torch.manual_seed(0)
    b = multi(image)
    assert len(a) == 3
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"jitter_strength": 3.0}, "jitter_strength"),
        ({"channels": 2}, "channels must be 1"),
        ({"mean": (0.1, 0.2)}, "mean and std"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"image_size": 16, "channels": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        simclr_view_transform(**args)


def test_light_train_eval_and_repeat_channels() -> None:
    image = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    assert light_train_transform(16, 1)(image).shape == (1, 16, 16)
    ev = eval_transform(1, (0.5,), (0.5,))(image)
    assert torch.allclose(ev, image.float() / 255 * 2 - 1, atol=1e-6)
    rgb = RepeatChannels(3)(image)
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[2], image[0])
    with pytest.raises(ValueError, match="at least one"):
        MultiViewTransform([])
