"""ViewSpec: validation (the per-op ``jitter`` magnitudes included) and what both executors read from it."""

from __future__ import annotations

import pytest
import torch

from lightning_tl.augment import ViewSpec
from lightning_tl.augment.batch_views import VIEW_DRAWS, sample_view_params
from lightning_tl.augment.counter_rng import uniform
from lightning_tl.augment.view_spec import PARAM as P
from lightning_tl.augment.view_spec import blur_kernel_size, check_crop_scale, check_jitter_strength


def test_jitter_magnitudes_per_op_or_from_one_strength() -> None:
    assert ViewSpec(8).jitter_magnitudes == pytest.approx((0.4, 0.4, 0.4, 0.1))  # SimCLR's 0.8s, 0.2s
    assert ViewSpec(8, jitter_strength=1.0).jitter_magnitudes == pytest.approx((0.8, 0.8, 0.8, 0.2))
    byol = ViewSpec(8, jitter_strength=1.0, jitter=(0.4, 0.4, 0.2, 0.1))  # per-op magnitudes win
    assert byol.jitter_magnitudes == (0.4, 0.4, 0.2, 0.1)
    as_list = ViewSpec(8, jitter=[1, 0, 0.5, 0])  # type: ignore[arg-type]  # e.g. from YAML
    assert as_list.jitter == (1.0, 0.0, 0.5, 0.0) and all(type(m) is float for m in as_list.jitter)
    assert hash(as_list) == hash(ViewSpec(8, jitter=(1.0, 0.0, 0.5, 0.0)))  # frozen, hashable, equal
    assert as_list == ViewSpec(8, jitter=(1.0, 0.0, 0.5, 0.0))


def test_jitters_only_when_it_can_change_a_view() -> None:
    assert ViewSpec(8).jitters
    assert not ViewSpec(8, jitter_strength=0.0).jitters
    assert not ViewSpec(8, jitter=(0.0, 0.0, 0.0, 0.0)).jitters
    assert ViewSpec(8, jitter_strength=0.0, jitter=(0.0, 0.0, 0.0, 0.1)).jitters  # hue alone
    assert not ViewSpec(8, jitter=(0.4, 0.4, 0.2, 0.1), jitter_prob=0.0).jitters
    table = sample_view_params(ViewSpec(8, jitter=(0.0,) * 4), uniform(torch.arange(50), VIEW_DRAWS), 8, 8)
    assert not bool(table[:, P["jitter"]].any())  # never flagged: the kernels skip it


@pytest.mark.parametrize(
    "jitter",
    [
        (0.4, 0.4, 0.2),
        (0.4, 0.4, 0.2, 0.1, 0.0),
        (-0.1, 0.4, 0.2, 0.1),
        (0.4, 0.4, -0.2, 0.1),
        (0.4, 0.4, 0.2, 0.6),
    ],
)
def test_bad_jitter_is_refused_with_the_expected_form(jitter: tuple[float, ...]) -> None:
    match = (
        r"jitter must be 4 magnitudes >= 0 \(brightness, contrast, saturation, hue <= 0\.5\), e\.g\. .*got"
    )
    with pytest.raises(ValueError, match=match) as info:
        ViewSpec(8, jitter=jitter)  # type: ignore[arg-type]
    assert str(jitter) in str(info.value)


@pytest.mark.parametrize(
    ("jitter", "bounds"),
    [
        ((0.4, 0.4, 0.2, 0.1), [(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]),
        ((1.5, 0.0, 0.9, 0.5), [(0.0, 2.5), (1.0, 1.0), (0.1, 1.9), (-0.5, 0.5)]),  # factors stay >= 0
    ],
)
def test_drawn_factors_span_the_per_op_ranges(
    jitter: tuple[float, float, float, float], bounds: list[tuple[float, float]]
) -> None:
    """``ColorJitter``'s ranges: factors uniform in [max(0, 1 - m), 1 + m], the hue shift in [-m, m]."""
    table = sample_view_params(ViewSpec(8, jitter=jitter), uniform(torch.arange(2000), VIEW_DRAWS), 8, 8)
    for op, (lo, hi) in enumerate(bounds):
        factor = table[:, P["factors"] + op]
        assert float(factor.min()) >= lo - 1e-12 and float(factor.max()) <= hi + 1e-12
        assert float(factor.max()) - float(factor.min()) >= 0.98 * (hi - lo)  # and fill them


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 0}, r"ViewSpec\.size must be a positive number of pixels, got 0"),
        ({"crop_scale": (0.5, 0.1)}, r"crop_scale must satisfy 0 < min <= max <= 1, got \(0\.5, 0\.1\)"),
        ({"crop_ratio": (1.5, 0.5)}, r"crop_ratio must satisfy 0 < min <= max"),
        ({"jitter_strength": 2.6}, r"jitter_strength must be in \[0, 2\.5\], got 2\.6"),
        ({"blur_kernel": 4}, r"blur_kernel must be a positive odd number, got 4"),
        ({"blur_sigma": (0.0, 2.0)}, r"blur_sigma must satisfy 0 < min <= max"),
        ({"hflip_prob": 1.5}, r"hflip_prob must be a probability in \[0, 1\], got 1\.5"),
        ({"jitter_prob": -0.1}, r"jitter_prob must be a probability"),
        ({"grayscale_prob": 2.0}, r"grayscale_prob must be a probability"),
        ({"blur_prob": 1.1}, r"blur_prob must be a probability"),
        ({"solarize_prob": -1.0}, r"solarize_prob must be a probability"),
    ],
)
def test_bad_fields_name_themselves(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ViewSpec(**{"size": 8, **kwargs})


def test_helpers() -> None:
    assert [blur_kernel_size(s) for s in (8, 16, 32, 96, 224)] == [3, 3, 3, 9, 23]  # ~10% of the side, odd
    check_crop_scale((0.08, 1.0))
    with pytest.raises(ValueError, match=r"^local_crop_scale must be \(min, max\) area fractions"):
        check_crop_scale((0.4, 0.05), "local_crop_scale")
    with pytest.raises(ValueError, match="crop_scale must be"):
        check_crop_scale((0.1, 0.5, 1.0))
    check_jitter_strength(2.5)
    with pytest.raises(ValueError, match=r"jitter_strength must be in \[0, 2\.5\] \(0 disables"):
        check_jitter_strength(-0.5)
