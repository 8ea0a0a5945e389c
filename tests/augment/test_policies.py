"""build_policy / parse_policy: grammar, op sets, timm parity, dtype/shape/label, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_tl.augment import augment_ops
from lightning_tl.augment.augment_ops import OPS, OpParams, apply_op
from lightning_tl.augment.policies import build_policy, parse_policy
from lightning_tl.augment.policy_transforms import TimmAugMix, TimmRandAugment, sample_level

timm_aa = pytest.importorskip("timm.data.auto_augment")

SPECS = [
    "none", "autoaugment", "autoaugment:cifar10", "autoaugment:svhn", "randaugment",
    "randaugment:num_ops=3,magnitude=5", "trivialaugment", "augmix", "augmix:all_ops=false",
    "rand-m9-mstd0.5-inc1", "rand-m7-n3-p0.8-mmax15", "rand-mstd1-tweights", "rand-m9-t3a", "augmix-m5-w3-d2",
    "augmix-m3-w4-b1", "v0", "v0r", "original", "originalr", "3a", "original-mstd0.5",
    "subpolicies:Rotate/0.6/5+Equalize/0.8/2;ShearX/0.4/3+Invert/0.2/0",
]  # fmt: skip


def test_parsed_families_and_parameters() -> None:
    p = parse_policy("randaugment:num_ops=3,magnitude=5")
    assert (p.family, p.source, p.params) == (
        "randaugment",
        "torchvision",
        {"num_ops": 3, "magnitude": 5, "num_magnitude_bins": 31},
    )
    t = parse_policy("rand-m9-mstd0.5-inc1")
    assert (t.family, t.source) == ("randaugment", "timm")
    assert t.params["magnitude"] == 9 and t.params["magnitude_std"] == 0.5 and t.params["num_ops"] == 2
    assert t.params["prob"] == 0.5 and t.params["ops"][4] == "PosterizeIncreasing"  # inc1: increasing ops
    assert parse_policy("rand-m9").params["ops"][4] == "Posterize"
    assert math.isinf(parse_policy("rand-m9-mstd101").params["magnitude_std"])  # timm: > 100 = uniform
    a = parse_policy("augmix-m5-w3-d2")
    assert (a.params["magnitude"], a.params["width"], a.params["depth"], a.params["blended"]) == (
        5,
        3,
        2,
        False,
    )
    assert math.isinf(a.params["magnitude_std"])  # timm's AugMix default: uniform magnitudes
    s = parse_policy("subpolicies:Rotate/0.6/5+Equalize/0.8/2;ShearX/0.4/3+Invert/0.2/0")
    assert s.sub_policies == (
        (("Rotate", 0.6, 5.0), ("Equalize", 0.8, None)),
        (("ShearX", 0.4, 3.0), ("Invert", 0.2, None)),
    )
    assert parse_policy("none").ops == ()


def test_torchvision_specs_build_torchvision_objects_with_the_parsed_ops() -> None:
    assert isinstance(build_policy("autoaugment:svhn"), v2.AutoAugment)
    ra = build_policy("randaugment:num_ops=3,magnitude=5")
    assert isinstance(ra, v2.RandAugment) and (ra.num_ops, ra.magnitude) == (3, 5)
    assert isinstance(build_policy("trivialaugment"), v2.TrivialAugmentWide)
    assert isinstance(build_policy("augmix:all_ops=false"), v2.AugMix)
    assert parse_policy("randaugment").ops == tuple(sorted(v2.RandAugment._AUGMENTATION_SPACE))
    tv_aa = build_policy("autoaugment:cifar10")._policies  # type: ignore[attr-defined]
    assert parse_policy("autoaugment:cifar10").ops == tuple(sorted({n for sp in tv_aa for n, _, _ in sp}))
    assert isinstance(build_policy("rand-m9-mstd0.5-inc1"), TimmRandAugment)
    assert isinstance(build_policy("augmix-m5-w3-d2"), TimmAugMix)


def test_timm_and_torchvision_names_of_the_same_policy_agree() -> None:
    # The AutoAugment paper's ImageNet policy: same sub-policies, probabilities and levels.
    assert parse_policy("original").sub_policies == parse_policy("autoaugment:imagenet").sub_policies
    # AugMix: timm's ops are the paper's nine plus the four colour ops = torchvision's all_ops=True.
    assert parse_policy("augmix-m3-w3-d2").ops == parse_policy("augmix").ops
    assert set(parse_policy("augmix:all_ops=false").ops) < set(parse_policy("augmix").ops)
    # RandAugment: the op sets differ by design; pin the difference so it stays known.
    timm_ops, tv_ops = set(parse_policy("rand-m9-n2").ops), set(parse_policy("randaugment").ops)
    assert tv_ops - timm_ops == {"Identity"} and timm_ops - tv_ops == {"Invert", "SolarizeAdd"}


@pytest.mark.parametrize(
    ("spec", "token"),
    [
        ("autoaugment:foo", "'foo'"),
        ("randaugment:num_ops=x", "'num_ops=x'"),
        ("randaugment:depth=2", "'depth=2'"),
        ("randaugment:magnitude=40", "'magnitude=40'"),
        ("rand-m9-q3", "'q3'"),
        ("rand-m9-tfoo", "'tfoo'"),
        ("rand-p2", "'p'"),
        ("augmix-z3", "'z3'"),
        ("v1", "'v1'"),
        ("subpolicies:Foo/0.5/3", "'Foo/0.5/3'"),
        ("subpolicies:Rotate/1.5/3", "'Rotate/1.5/3'"),
        ("subpolicies:Rotate/0.5", "'Rotate/0.5'"),
    ],
)
def test_invalid_specs_name_the_bad_token_and_list_the_grammar(spec: str, token: str) -> None:
    with pytest.raises(ValueError, match="bad augmentation policy") as info:
        parse_policy(spec)
    assert f"(token {token})" in str(info.value)
    assert "valid policy specs:" in str(info.value) and "rand-m9-mstd0.5-inc1" in str(info.value)
    with pytest.raises(TypeError, match="must be a string"):
        parse_policy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", SPECS)
def test_policies_keep_dtype_shape_and_label_and_are_seeded(spec: str) -> None:
    policy = build_policy(spec)
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 28, 28), (3, 21, 34)]:
        image = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        outs = []
        for _ in range(2):
            torch.manual_seed(7)
            out, label = policy(image, 4)
            outs.append(torch.stack([out, *(policy(image, 4)[0] for _ in range(5))]))
            assert out.dtype == torch.uint8 and out.shape == image.shape and label == 4
        assert torch.equal(outs[0], outs[1])  # same seed, same views
    if spec != "none":  # and different draws differ
        torch.manual_seed(0)
        views = torch.stack([policy(image) for _ in range(20)])
        assert not all(torch.equal(v, views[0]) for v in views)


def test_level_to_argument_matches_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment_ops, "_sign", lambda: 1.0)
    monkeypatch.setattr(timm_aa, "_randomly_negate", lambda v: v)
    hparams = {"translate_const": 250, "translate_pct": 0.45, "img_mean": (128, 128, 128)}
    for name, op in OPS.items():
        if op.level_to_arg is None:
            assert timm_aa.LEVEL_TO_ARG[name] is None
            continue
        for level in [0, 1, 2.5, 5, 9, 10]:
            assert op.level_to_arg(level, OpParams()) == pytest.approx(
                timm_aa.LEVEL_TO_ARG[name](level, hparams)[0]
            )


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_ops_match_timm_pil_within_rounding(channels: int) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (channels, 20, 24), generator=g, dtype=torch.uint8)
    image[:, :5] = torch.randint(30, 200, (channels, 5, 24), generator=g, dtype=torch.uint8)
    array = image[0].numpy() if channels == 1 else image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(np.ascontiguousarray(array))
    names = ["AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeOriginal", "Solarize",
             "SolarizeIncreasing", "SolarizeAdd", "Brightness", "Contrast", "Sharpness", "Color"]  # fmt: skip
    for name in names:
        for level in [3, 7, 10]:
            ref = torch.from_numpy(np.asarray(timm_aa.AugmentOp(name, prob=1.0, magnitude=level)(pil)).copy())
            ref = ref.unsqueeze(0) if channels == 1 else ref.permute(2, 0, 1)
            diff = (apply_op(image, name, level).int() - ref.int()).abs().max()
            assert diff <= 1, (name, level, int(diff))  # PIL and torchvision round differently


def test_magnitude_noise_follows_timm() -> None:
    torch.manual_seed(0)
    gauss = torch.tensor([sample_level(5, 1.0) for _ in range(4000)])
    assert gauss.mean() == pytest.approx(5, abs=0.06) and gauss.std() == pytest.approx(1, abs=0.05)
    uniform = torch.tensor([sample_level(8, math.inf) for _ in range(4000)])
    assert uniform.min() >= 0 and uniform.max() <= 8 and uniform.mean() == pytest.approx(4, abs=0.15)
    assert sample_level(9, 0.0) == 9 and sample_level(30, 0.0) == 10 and sample_level(30, 0.0, 15) == 15


def test_timm_randaugment_probability_and_weights() -> None:
    never = TimmRandAugment(["Invert"], num_ops=2, magnitude=9, prob=0.0)
    always = TimmRandAugment(["Invert"], num_ops=1, magnitude=9, prob=1.0)
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert torch.equal(never(image), image) and torch.equal(always(image), 255 - image)
    weighted = TimmRandAugment(["Invert", "Equalize"], num_ops=1, prob=1.0, weights=[1.0, 0.0])
    assert torch.equal(weighted(image), 255 - image)
    with pytest.raises(ValueError, match="positive weight"):
        TimmRandAugment(["Invert", "Equalize"], num_ops=2, weights=[1.0, 0.0])


@pytest.mark.parametrize("blended", [False, True])
def test_augmix_of_identity_chains_returns_the_image(blended: bool) -> None:
    # AutoContrast is the identity on an image already spanning 0..255 per channel: every chain is the
    # image, so the mix must be too (checks the mixing weights sum to one in both modes).
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    image[:, 0, 0], image[:, 0, 1] = 0, 255
    mix = TimmAugMix(["AutoContrast"], width=3, depth=2, blended=blended)
    torch.manual_seed(0)
    for _ in range(5):
        assert (mix(image).int() - image.int()).abs().max() <= 1
