"""BatchViews: the per-sample recipe's ops and sampling distributions, per-image seeding, dtypes."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lightning_tl.augment import SimCLRViews
from lightning_tl.augment.batch_views import VIEW_DRAWS, BatchViews, ViewSpec, sample_view_params
from lightning_tl.augment.counter_rng import uniform
from lightning_tl.augment.view_spec import PARAM as P

N_DRAWS = 4000


def _uint8(b: int, c: int, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def _simclr_spec(size: int, channels: int, **kwargs: object) -> ViewSpec:
    """The first view of ``SimCLRViews(**kwargs)`` at ``size`` px (flips on, as on natural images)."""
    return SimCLRViews(**kwargs).specs(size, channels)[0]  # type: ignore[arg-type]


def _reference_view(image: torch.Tensor, row: list[float], spec: ViewSpec, channels: int) -> torch.Tensor:
    """One view made with torchvision's functional ops from a row of BatchViews' parameter table,
    read by the column names of ``view_spec.PARAM_COLUMNS``."""
    top, left, h, w = (int(row[P[name]]) for name in ("top", "left", "height", "width"))
    x = image.float() / 255
    x = TF.resized_crop(x, top, left, h, w, [spec.size, spec.size], antialias=True)
    if x.shape[0] != channels:
        x = x.repeat(channels, 1, 1)
    if row[P["flip"]]:
        x = TF.horizontal_flip(x)
    if row[P["jitter"]]:
        fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for op in (int(v) for v in row[P["order"] : P["order"] + 4]):
            if channels == 3 or op < 2:
                x = fns[op](x, row[P["factors"] + op])
    if channels == 3 and row[P["gray"]]:
        x = TF.rgb_to_grayscale(x, 3)
    if row[P["blur"]]:
        x = TF.gaussian_blur(x, [spec.blur_kernel] * 2, [row[P["sigma"]]] * 2)
    if row[P["solar"]]:
        x = TF.solarize(x, 0.5)
    return TF.normalize(x, [0.5] * channels, [0.25] * channels)


@pytest.mark.parametrize("cpu_kernel", [True, False])  # the compiled CPU kernel and the eager ops
@pytest.mark.parametrize(("in_channels", "channels"), [(3, 3), (1, 1), (1, 3)])
def test_views_equal_torchvision_ops_with_the_same_parameters(
    in_channels: int, channels: int, cpu_kernel: bool
) -> None:
    big = ViewSpec(16, crop_scale=(0.2, 1.0), jitter_strength=1.0, grayscale_prob=0.3, blur_prob=0.5,
                   blur_kernel=3, solarize_prob=0.3)  # fmt: skip
    small = ViewSpec(8, crop_scale=(0.05, 0.4), jitter_strength=0.5, blur_prob=0.5, blur_kernel=5)
    specs = [big, big, small]  # multi-crop: two global views and a local one
    images = _uint8(16, in_channels)
    seeds = torch.arange(16, dtype=torch.int64) * 7919
    maker = BatchViews(specs, channels, mean=(0.5,), std=(0.25,), cpu_kernel=cpu_kernel)
    views = maker(images, seeds)
    params = maker.sample_params(seeds, 20, 24)
    assert [tuple(v.shape) for v in views] == [(16, channels, 16, 16)] * 2 + [(16, channels, 8, 8)]
    for v, spec in enumerate(specs):
        for i in range(16):
            expected = _reference_view(images[i], params[v][i].tolist(), spec, channels)
            torch.testing.assert_close(views[v][i], expected, atol=2e-5, rtol=0)
    used = torch.cat(params)
    assert all(used[:, P[name]].any() for name in ("jitter", "blur", "solar"))  # all ran


def _crop_fractions(boxes: list[tuple[int, int]], h: int, w: int) -> tuple[list[float], list[float]]:
    area = [bh * bw / (h * w) for bh, bw in boxes]
    log_ratio = [math.log(bw / bh) for bh, bw in boxes]
    return area, log_ratio


@pytest.mark.parametrize(
    ("h", "w", "scale", "ratio"),
    [
        (28, 28, (0.08, 1.0), (3 / 4, 4 / 3)),
        (20, 24, (0.2, 1.0), (3 / 4, 4 / 3)),
        (8, 30, (0.5, 1.0), (0.9, 1.1)),
    ],
)
def test_crop_distribution_matches_random_resized_crop(
    h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    spec = ViewSpec(16, crop_scale=scale, crop_ratio=ratio)
    seeds = torch.arange(N_DRAWS, dtype=torch.int64)
    table = sample_view_params(spec, uniform(seeds, VIEW_DRAWS), h, w)
    ours = [(int(r[P["height"]]), int(r[P["width"]])) for r in table.tolist()]
    top, left, box_h, box_w = (table[:, P[name]] for name in ("top", "left", "height", "width"))
    assert bool(((top >= 0) & (top <= h - box_h) & (left >= 0) & (left <= w - box_w)).all())  # inside
    torch.manual_seed(0)
    crop = v2.RandomResizedCrop(16, scale=scale, ratio=ratio)
    image = torch.zeros(1, h, w, dtype=torch.uint8)
    params = [crop.make_params([image]) for _ in range(N_DRAWS)]
    theirs = [(p["height"], p["width"]) for p in params]
    for a, b in zip(_crop_fractions(ours, h, w), _crop_fractions(theirs, h, w), strict=True):
        assert stats.ks_2samp(a, b).pvalue > 1e-3
    for key in ("top", "left"):  # placement in the free range
        assert stats.ks_2samp(table[:, P[key]].numpy(), [p[key] for p in params]).pvalue > 1e-3


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1  # ~4.5 sigma


def test_jitter_and_probabilities_match_the_recipe() -> None:
    spec = _simclr_spec(32, 3, jitter_strength=0.5, blur=True, solarize_prob=0.2)
    table = sample_view_params(
        spec, uniform(torch.arange(N_DRAWS, dtype=torch.int64) + 99, VIEW_DRAWS), 32, 32
    )
    n = N_DRAWS
    assert _binomial_ok(int(table[:, P["flip"]].sum()), n, 0.5)
    assert _binomial_ok(int(table[:, P["jitter"]].sum()), n, 0.8)  # jitter applied
    assert _binomial_ok(int(table[:, P["gray"]].sum()), n, 0.2)
    assert _binomial_ok(int(table[:, P["blur"]].sum()), n, 0.5)
    assert _binomial_ok(int(table[:, P["solar"]].sum()), n, 0.2)
    torch.manual_seed(0)
    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    ref = [jitter.make_params([torch.zeros(3, 4, 4)]) for _ in range(n)]
    names = ["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]
    for col, name in enumerate(names):
        assert stats.ks_2samp(table[:, P["factors"] + col].numpy(), [r[name] for r in ref]).pvalue > 1e-3
    sigma = table[:, P["sigma"]].numpy()
    assert stats.kstest((sigma - 0.1) / 1.9, "uniform").pvalue > 1e-3
    orders = Counter(tuple(int(v) for v in row) for row in table[:, P["order"] : P["order"] + 4].tolist())
    assert len(orders) == 24  # every permutation of the four jitter ops, equally often
    assert stats.chisquare(list(orders.values())).pvalue > 1e-3


def test_views_depend_only_on_each_images_seed() -> None:
    maker = BatchViews([_simclr_spec(16, 1)] * 2, channels=1)
    images, seeds = _uint8(10, 1), torch.arange(10, dtype=torch.int64) * 31 + 5
    views = maker(images, seeds)
    again = maker(images, seeds)
    assert all(torch.equal(a, b) for a, b in zip(views, again, strict=True))
    part = maker(images[3:7].flip(0), seeds[3:7].flip(0))  # other batch, other order
    assert all(torch.equal(p, v[3:7].flip(0)) for p, v in zip(part, views, strict=True))
    other = maker(images, seeds + 1)
    assert not torch.equal(other[0], views[0])
    assert not torch.equal(views[0], views[1])  # the two views are independent draws
    from_int = maker(images, 1234)  # an int seed derives per-image seeds
    assert all(torch.equal(a, b) for a, b in zip(from_int, maker(images, 1234), strict=True))


@pytest.mark.parametrize("batch", [0, 1, 7])
def test_dtypes_and_batch_sizes(batch: int) -> None:
    images = _uint8(batch, 3, 32, 32)
    spec = _simclr_spec(32, 3, blur=True)
    f32 = BatchViews([spec], 3)(images, 0)[0]
    bf16 = BatchViews([spec], 3, dtype=torch.bfloat16)(images, 0)[0]
    assert f32.dtype == torch.float32 and bf16.dtype == torch.bfloat16 and f32.shape == (batch, 3, 32, 32)
    torch.testing.assert_close(bf16.float(), f32, atol=0.02, rtol=0.01)
    as_float = BatchViews([spec], 3)(images.float() / 255, 0)[0]  # float input in [0, 1]
    torch.testing.assert_close(as_float, f32)
    as_bf16 = BatchViews([spec], 3)((images.float() / 255).bfloat16(), 0)[0]  # rounded input pixels
    eager = BatchViews([spec], 3, cpu_kernel=False)(images, 0)[0]  # the GPU path, here on the CPU
    torch.testing.assert_close(eager, f32, atol=5e-5, rtol=0)
    assert as_bf16.dtype == torch.float32 and as_bf16.shape == f32.shape
    torch.testing.assert_close(as_bf16, f32, atol=0.05, rtol=0)  # 2^-9 of the input, through jitter gains


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one ViewSpec"):
        BatchViews([], 1)
    with pytest.raises(ValueError, match="channels must be 1"):
        BatchViews([ViewSpec(8)], 2)
    with pytest.raises(ValueError, match="mean and std"):
        BatchViews([ViewSpec(8)], 3, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="floating dtype"):
        BatchViews([ViewSpec(8)], 1, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"one seed per image, shape \(4,\)"):
        BatchViews([ViewSpec(8)], 1)(_uint8(4, 1), torch.arange(3))
    with pytest.raises(ValueError, match="C = 1 or 1"):
        BatchViews([ViewSpec(8)], 1)(_uint8(4, 3), 0)
    for kwargs, match in [
        ({"crop_scale": (0.5, 0.1)}, "crop_scale"),
        ({"blur_kernel": 4}, "blur_kernel"),
        ({"hflip_prob": 1.5}, "hflip_prob"),
        ({"jitter_strength": 3.0}, "jitter_strength"),
        ({"size": 0}, "size"),
    ]:
        with pytest.raises(ValueError, match=match):
            ViewSpec(**{"size": 8, **kwargs})


def test_bfloat16_resampling_changes_views_by_little() -> None:
    spec = ViewSpec(16, jitter_strength=0.5, blur_prob=0.5, blur_kernel=3)
    images, seeds = _uint8(32, 3), torch.arange(32, dtype=torch.int64)
    exact = BatchViews([spec] * 2, 3, mean=(0.5,), std=(0.25,))(images, seeds)
    fast = BatchViews([spec] * 2, 3, mean=(0.5,), std=(0.25,), resample_dtype=torch.bfloat16)(images, seeds)
    for e, f in zip(exact, fast, strict=True):
        assert f.dtype == torch.float32 and f.shape == e.shape
        levels = (f - e).abs() * 0.25 * 255  # back to uint8 levels before normalisation
        assert float(levels.mean()) <= 0.5 and float(levels.max()) <= 6  # jitter can amplify a level
    with pytest.raises(ValueError, match="resample_dtype must be a floating dtype"):
        BatchViews([spec], 3, resample_dtype=torch.int32)
