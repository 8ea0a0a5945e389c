"""View recipes: the papers' specs, clear errors, ``config()`` round trips, both executors drawing alike."""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from scipy import stats
from torchvision.transforms import v2

from lightning_tl.augment import (
    BatchViews,
    BYOLViews,
    DINOViews,
    MoCoV2Views,
    SimCLRViews,
    ViewRecipe,
    ViewSpec,
    view_transform,
)
from lightning_tl.augment.view_spec import PARAM as P
from lightning_tl.augment.view_spec import blur_kernel_size

BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # Grill et al. 2020, table 6; DINO uses the same


def _common(spec: ViewSpec, size: int, crop_scale: tuple[float, float]) -> None:
    """What every recipe here shares: crop with ratio (3/4, 4/3), flip 0.5, jitter with probability 0.8,
    grayscale 0.2 (RGB), blur kernel ~10% of the side with sigma in [0.1, 2]."""
    assert spec.size == size and spec.crop_scale == crop_scale
    assert spec.crop_ratio == (3 / 4, 4 / 3) and spec.hflip_prob == 0.5
    assert spec.jitter_prob == 0.8 and spec.grayscale_prob == 0.2
    assert spec.blur_kernel == blur_kernel_size(size) and spec.blur_sigma == (0.1, 2.0)


# ----------------------------------------------------------------- the papers' recipes
def test_simclr_views_follow_the_paper() -> None:
    """Chen et al. 2020, appendix A: ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) with s = 1 on ImageNet, blur 0.5
    with a kernel of 10% of the side (23 px at 224)."""
    specs = SimCLRViews(jitter_strength=1.0).specs(224, channels=3)
    assert len(specs) == 2 and specs[0] == specs[1]  # two draws of one recipe
    spec = specs[0]
    _common(spec, 224, (0.08, 1.0))
    assert spec.jitter_magnitudes == pytest.approx((0.8, 0.8, 0.8, 0.2)) and spec.jitter is None
    assert spec.blur_prob == 0.5 and spec.blur_kernel == 23 and spec.solarize_prob == 0.0
    assert SimCLRViews().specs(32, 3)[0].jitter_magnitudes == pytest.approx((0.4, 0.4, 0.4, 0.1))  # s = 0.5
    assert SimCLRViews().specs(32, 1)[0].grayscale_prob == 0.0  # grayscale data: nothing to convert
    # blur: automatic from 32 px (CIFAR's SimCLR runs drop it), or forced either way
    assert [SimCLRViews().specs(s, 3)[0].blur_prob for s in (28, 32)] == [0.0, 0.5]
    assert SimCLRViews(blur=True).specs(16, 1)[0].blur_prob == 0.5
    assert SimCLRViews(blur=False).specs(96, 3)[0].blur_prob == 0.0
    assert SimCLRViews(solarize_prob=0.2).specs(32, 3)[0].solarize_prob == 0.2


def test_simclr_local_views_are_smaller_multi_crops() -> None:
    recipe = SimCLRViews(num_views=3, local_views=4)
    assert (recipe.num_global_views, recipe.num_local_views, len(recipe)) == (3, 4, 7)
    specs = recipe.specs(64, channels=3)
    assert [s.size for s in specs] == [64] * 3 + [32] * 4  # image_size // 2 by default
    assert all(s.crop_scale == (0.05, 0.4) for s in specs[3:])  # SwAV's local crops
    assert specs[3].blur_prob == 0.5 and specs[3].blur_kernel == 3  # blur on: the recipe's global size
    assert [s.blur_prob for s in SimCLRViews(local_views=1).specs(32, 3)] == [0.5, 0.5, 0.0]  # 16 px: off
    sized = SimCLRViews(local_views=2, local_image_size=12, local_crop_scale=(0.1, 0.3)).specs(32, 1)
    assert [(s.size, s.crop_scale) for s in sized[2:]] == [(12, (0.1, 0.3))] * 2


def test_moco_v2_views_follow_the_paper() -> None:
    """Chen, Fan, Girshick, He 2020: crops of 20-100%, ColorJitter(0.4, 0.4, 0.4, 0.1) with probability
    0.8, grayscale 0.2, blur 0.5 (at every size), flip."""
    recipe = MoCoV2Views()
    assert len(recipe) == 2
    for size in (16, 224):
        a, b = recipe.specs(size, channels=3)
        assert a == b
        _common(a, size, (0.2, 1.0))
        assert a.jitter_magnitudes == pytest.approx((0.4, 0.4, 0.4, 0.1))
        assert a.blur_prob == 0.5 and a.solarize_prob == 0.0


def test_byol_views_are_asymmetric_as_in_the_paper() -> None:
    """Grill et al. 2020, table 6: blur 1.0 / 0.1, solarisation 0.0 / 0.2, ColorJitter(0.4, 0.4, 0.2, 0.1)."""
    a, b = BYOLViews().specs(224, channels=3)
    for spec in (a, b):
        _common(spec, 224, (0.08, 1.0))
        assert spec.jitter == spec.jitter_magnitudes == BYOL_JITTER
    assert (a.blur_prob, b.blur_prob, a.solarize_prob, b.solarize_prob) == (1.0, 0.1, 0.0, 0.2)
    assert a.blur_kernel == 23
    gray = BYOLViews(blur_probs=(0.5, 0.5), solarize_probs=(0.1, 0.0)).specs(16, channels=1)
    assert [(s.grayscale_prob, s.blur_prob, s.solarize_prob) for s in gray] == [
        (0.0, 0.5, 0.1),
        (0.0, 0.5, 0.0),
    ]


def test_dino_views_are_two_global_and_several_local_crops() -> None:
    """Caron et al. 2021: global crops (0.4, 1) blurred 1.0 / 0.1 (the second solarised 0.2), local crops
    (0.05, 0.4) at 96 px of 224 blurred 0.5; BYOL's jitter everywhere."""
    recipe = DINOViews()
    assert (recipe.num_global_views, recipe.num_local_views, len(recipe)) == (2, 6, 8)
    specs = recipe.specs(224, channels=3)
    first, second, *local = specs
    for spec in (first, second):
        _common(spec, 224, (0.4, 1.0))
    assert (first.blur_prob, second.blur_prob, first.solarize_prob, second.solarize_prob) == (
        1.0,
        0.1,
        0.0,
        0.2,
    )
    assert len(local) == 6 and all(s == local[0] for s in local)
    _common(local[0], 96, (0.05, 0.4))
    assert local[0].blur_prob == 0.5 and local[0].solarize_prob == 0.0 and local[0].blur_kernel == 9
    assert all(s.jitter == BYOL_JITTER for s in specs)
    assert [s.size for s in DINOViews(local_views=2).specs(32, 3)] == [32, 32, 14, 14]  # round(32 * 96 / 224)
    assert [s.size for s in DINOViews(local_views=1, local_image_size=10).specs(32, 3)] == [32, 32, 10]
    assert len(DINOViews(local_views=0).specs(32, 3)) == 2


RECIPES: list[Callable[..., ViewRecipe]] = [SimCLRViews, MoCoV2Views, BYOLViews, DINOViews]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.__name__)
def test_hflip_defaults_to_the_datamodules_choice_unless_set(recipe: Callable[..., ViewRecipe]) -> None:
    def flips(made: ViewRecipe, default: bool) -> set[float]:
        return {spec.hflip_prob for spec in made.specs(32, 3, hflip=default)}

    assert flips(recipe(), True) == {0.5} and flips(recipe(), False) == {0.0}  # e.g. digits turn it off
    assert flips(recipe(hflip=True), False) == {0.5} and flips(recipe(hflip=False), True) == {0.0}
    assert recipe().on_device is None and recipe(on_device=True).on_device is True


# ----------------------------------------------------------------- bad input
BAD: list[tuple[Callable[[], Any], str]] = [
    (lambda: SimCLRViews(num_views=1), r"^num_views must be an integer >= 2, got 1$"),
    (lambda: SimCLRViews(num_views=2.5), r"num_views must be an integer >= 2, got 2\.5"),  # type: ignore[arg-type]
    (lambda: SimCLRViews(local_views=-1), r"local_views must be an integer >= 0, got -1"),
    (lambda: SimCLRViews(crop_scale=(0.9, 0.1)), r"^crop_scale must be \(min, max\).*got \(0\.9, 0\.1\)"),
    (lambda: SimCLRViews(local_crop_scale=(0.0, 0.4)), r"^local_crop_scale must be .*got \(0\.0, 0\.4\)"),
    (lambda: SimCLRViews(jitter_strength=3.0), r"jitter_strength must be in \[0, 2\.5\].*got 3\.0"),
    (lambda: SimCLRViews(solarize_prob=1.5), r"solarize_prob must be a probability in \[0, 1\], got 1\.5"),
    (
        lambda: SimCLRViews(local_image_size=0),
        r"local_image_size must be a positive number of pixels or null",
    ),
    (lambda: SimCLRViews(hflip="yes"), r"hflip must be true, false or null, got 'yes'"),  # type: ignore[arg-type]
    (lambda: SimCLRViews(on_device=1), r"on_device must be true, false or null, got 1"),  # type: ignore[arg-type]
    (lambda: MoCoV2Views(crop_scale=(0.2, 1.5)), r"^crop_scale must be .*got \(0\.2, 1\.5\)"),
    (lambda: MoCoV2Views(jitter_strength=-1.0), r"jitter_strength must be in \[0, 2\.5\]"),
    (
        lambda: BYOLViews(blur_probs=(1.0,)),  # type: ignore[arg-type]
        r"blur_probs must hold one probability per view \(2\), got \(1\.0,\)",
    ),
    (
        lambda: BYOLViews(solarize_probs=(0.0, 1.2)),
        r"solarize_probs must be a probability in \[0, 1\], got 1\.2",
    ),
    (lambda: BYOLViews(jitter=(0.4, 0.4, 0.2)), r"jitter must be 4 magnitudes .*got \(0\.4, 0\.4, 0\.2\)"),  # type: ignore[arg-type]
    (lambda: BYOLViews(jitter=(0.4, 0.4, 0.2, 0.6)), r"hue <= 0\.5.*got \(0\.4, 0\.4, 0\.2, 0\.6\)"),
    (lambda: BYOLViews(jitter=(-0.1, 0.4, 0.2, 0.1)), r"jitter must be 4 magnitudes >= 0"),
    (lambda: BYOLViews(crop_scale=(0.0, 1.0)), r"^crop_scale must be"),
    (lambda: DINOViews(local_views=-2), r"local_views must be an integer >= 0, got -2"),
    (lambda: DINOViews(global_crop_scale=(0.4, 1.5)), r"^global_crop_scale must be .*got \(0\.4, 1\.5\)"),
    (lambda: DINOViews(local_crop_scale=(0.5, 0.4)), r"^local_crop_scale must be .*got \(0\.5, 0\.4\)"),
    (lambda: DINOViews(local_image_size=0), r"local_image_size must be a positive number of pixels or null"),
    (lambda: DINOViews(jitter=(1.0, 1.0, 1.0, 1.0)), r"hue <= 0\.5"),
    (lambda: DINOViews(hflip=0), r"hflip must be true, false or null, got 0"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("make", "match"), BAD)
def test_bad_arguments_raise_naming_the_argument_and_value(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_an_incomplete_recipe_says_what_to_define() -> None:
    class NoSpecs(ViewRecipe):
        pass

    with pytest.raises(NotImplementedError, match="NoSpecs must define num_global_views"):
        len(NoSpecs())
    with pytest.raises(NotImplementedError, match=r"NoSpecs must define specs\(\)"):
        NoSpecs().specs(32, 3)


class TwoSizes(ViewRecipe):
    """A user's recipe: one view at the image size and one half-size crop without colour changes (it
    takes no ``on_device``: its config leaves that out)."""

    def __init__(self, small_scale: tuple[float, float] = (0.2, 0.5), *, hflip: bool | None = None) -> None:
        super().__init__(hflip=hflip)
        self.small_scale = small_scale

    @property
    def num_global_views(self) -> int:
        return 1

    @property
    def num_local_views(self) -> int:
        return 1

    def specs(self, image_size: int, channels: int, hflip: bool = True) -> list[ViewSpec]:
        flip = 0.5 if (self.hflip if self.hflip is not None else hflip) else 0.0
        small = ViewSpec(
            image_size // 2, self.small_scale, hflip_prob=flip, jitter_prob=0.0, grayscale_prob=0.0
        )
        return [ViewSpec(image_size, hflip_prob=flip), small]


# ----------------------------------------------------------------- config() round trips
CONFIGURED: list[ViewRecipe] = [
    SimCLRViews(),
    SimCLRViews(3, (0.2, 0.9), 0.7, True, 0.1, 2, 12, (0.1, 0.3), hflip=False, on_device=True),
    MoCoV2Views(),
    MoCoV2Views(crop_scale=(0.3, 1.0), jitter_strength=0.4, blur=False, hflip=True),
    BYOLViews(),
    BYOLViews((0.2, 1.0), (0.3, 0.3, 0.1, 0.05), (0.9, 0.2), (0.0, 0.3), on_device=False),
    DINOViews(),
    DINOViews(4, (0.5, 1.0), (0.1, 0.5), 40, (0.2, 0.2, 0.1, 0.0), hflip=True, on_device=True),
    TwoSizes((0.1, 0.4), hflip=False),
]


def _same(a: ViewRecipe, b: ViewRecipe) -> bool:
    """Equal recipes: same class, same arguments, same views at several sizes and channel counts."""
    return (
        type(a) is type(b)
        and a.config() == b.config()
        and len(a) == len(b)
        and all(
            a.specs(s, c, d) == b.specs(s, c, d) for s in (16, 224) for c in (1, 3) for d in (False, True)
        )
    )


@pytest.mark.parametrize("recipe", CONFIGURED, ids=repr)
def test_config_is_plain_data_that_rebuilds_an_equal_recipe(recipe: ViewRecipe) -> None:
    config = recipe.config()
    assert set(config) == {"class_path", "init_args"}
    module, _, name = config["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert cls is type(recipe)
    assert _same(cls(**config["init_args"]), recipe)
    text = yaml.safe_dump(config)  # plain data: safe_dump refuses objects
    assert type(recipe).__name__ in repr(recipe)
    # the way YAML recipes and LightningCLI build it: lists for tuples, through jsonargparse
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--views", type=ViewRecipe | None)
    made = parser.instantiate(parser.parse_object({"views": yaml.safe_load(text)}))
    assert _same(made.views, recipe)


def test_moco_v2_config_lists_only_its_own_arguments() -> None:
    init_args = MoCoV2Views().config()["init_args"]
    assert sorted(init_args) == ["blur", "crop_scale", "hflip", "jitter_strength", "on_device"]


# ----------------------------------------------------------------- both executors draw alike
N_DRAWS = 4000


def _binomial_ok(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1  # ~4.5 sigma


def _step(pipeline: v2.Compose, kind: type) -> tuple[Any, float]:
    """The ``kind`` step of a per-sample pipeline and the probability that it runs."""
    for t in pipeline.transforms:
        if isinstance(t, v2.RandomApply) and isinstance(t.transforms[0], kind):
            return t.transforms[0], t.p
        if isinstance(t, kind):
            return t, getattr(t, "p", 1.0)
    raise AssertionError(f"no {kind.__name__} in {pipeline}")


def test_per_sample_and_batched_executors_draw_byol_views_alike() -> None:
    """BYOL's second view (per-op jitter, blur 0.1, solarisation 0.2): the random steps of the per-sample
    torchvision pipeline built from the spec and BatchViews' parameter table draw the same crops,
    probabilities, jitter factors and orders, and blur sigmas."""
    spec = BYOLViews().specs(32, channels=3)[1]
    pipeline = view_transform(spec, 3)
    table = BatchViews([spec], 3).sample_params(torch.arange(N_DRAWS, dtype=torch.int64) + 1, 40, 48)[0]
    image = torch.zeros(3, 40, 48, dtype=torch.uint8)
    torch.manual_seed(0)

    crop, _ = _step(pipeline, v2.RandomResizedCrop)
    boxes = [crop.make_params([image]) for _ in range(N_DRAWS)]
    for key in ("top", "left", "height", "width"):
        assert stats.ks_2samp(table[:, P[key]].numpy(), [b[key] for b in boxes]).pvalue > 1e-3, key

    for column, kind in [
        ("flip", v2.RandomHorizontalFlip),
        ("jitter", v2.ColorJitter),
        ("gray", v2.RandomGrayscale),
        ("blur", v2.GaussianBlur),
        ("solar", v2.RandomSolarize),
    ]:
        _, p = _step(pipeline, kind)
        assert p == {"flip": 0.5, "jitter": 0.8, "gray": 0.2, "blur": 0.1, "solar": 0.2}[column]
        assert _binomial_ok(int(table[:, P[column]].sum()), N_DRAWS, p), column

    jitter, _ = _step(pipeline, v2.ColorJitter)
    drawn = [jitter.make_params([image]) for _ in range(N_DRAWS)]
    names = ["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]
    for op, name in enumerate(names):
        ours = table[:, P["factors"] + op].numpy()
        assert stats.ks_2samp(ours, [d[name] for d in drawn]).pvalue > 1e-3, name
    assert float(table[:, P["factors"] + 2].min()) >= 0.8 and float(table[:, P["factors"] + 2].max()) <= 1.2
    order = table[:, P["order"] : P["order"] + 4].long().tolist()
    theirs = Counter(tuple(d["fn_idx"].tolist()) for d in drawn)
    ours_count = Counter(tuple(row) for row in order)
    assert set(ours_count) == set(theirs) and len(theirs) == 24  # every order of the four ops
    counts = [[ours_count[k] for k in sorted(theirs)], [theirs[k] for k in sorted(theirs)]]
    assert stats.chi2_contingency(counts).pvalue > 1e-3

    blur, _ = _step(pipeline, v2.GaussianBlur)
    assert blur.kernel_size == (spec.blur_kernel, spec.blur_kernel)
    sigmas = [blur.make_params([image])["sigma"][0] for _ in range(N_DRAWS)]
    assert stats.ks_2samp(table[:, P["sigma"]].numpy(), sigmas).pvalue > 1e-3
