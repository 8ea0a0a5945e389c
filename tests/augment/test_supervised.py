"""SupervisedAugment: per-sample crop, flip and policy; per-batch mixing; clear errors; config round trip."""

from __future__ import annotations

import importlib

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from torchvision.transforms import v2

from lightning_tl.augment import BatchMixing, SupervisedAugment
from lightning_tl.augment.policy_transforms import TimmRandAugment


def test_defaults_are_crop_and_flip_only() -> None:
    augment = SupervisedAugment()
    assert (augment.policy, augment.hflip, augment.mixes, augment.batch_level) == ("none", None, False, False)
    crop, flip, policy = augment.steps(16)
    assert isinstance(crop, v2.RandomCrop) and crop.size == (16, 16) and crop.padding == [2, 2, 2, 2]
    assert isinstance(flip, v2.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(policy, v2.Identity)
    for size, padding in ((32, 4), (4, 1)):  # CIFAR's 4 px at 32 px; at least 1
        crop = SupervisedAugment().steps(size)[0]
        assert isinstance(crop, v2.RandomCrop) and crop.padding == [padding] * 4


def test_hflip_defaults_to_the_datamodules_choice_unless_set() -> None:
    def flips(augment: SupervisedAugment, default: bool) -> bool:
        return any(isinstance(s, v2.RandomHorizontalFlip) for s in augment.steps(16, hflip=default))

    assert flips(SupervisedAugment(), True) and not flips(SupervisedAugment(), False)  # digits: off
    assert flips(SupervisedAugment(hflip=True), False) and not flips(SupervisedAugment(hflip=False), True)


def test_policy_runs_after_the_crop_on_uint8_images() -> None:
    augment = SupervisedAugment(" rand-m9-mstd0.5-inc1 ")
    assert augment.policy == "rand-m9-mstd0.5-inc1"  # stripped, as parse_policy reads it
    assert isinstance(augment.steps(16)[-1], TimmRandAugment)
    assert isinstance(SupervisedAugment("autoaugment:cifar10").steps(16)[-1], v2.AutoAugment)
    pipeline = v2.Compose(SupervisedAugment("trivialaugment", hflip=True).steps(12))
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8)
    torch.manual_seed(0)
    out = pipeline(image)
    assert out.dtype == torch.uint8 and out.shape == (3, 12, 12)


def test_mixing_is_batch_mixing_with_the_same_options() -> None:
    augment = SupervisedAugment(
        mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.5, switch_prob=0.3, noise_std=0.1
    )
    assert augment.mixes and augment.batch_level
    assert augment.mixing(10) == BatchMixing(10, 0.2, 1.0, 0.5, 0.3, 0.1)
    noise = SupervisedAugment(noise_std=0.2)
    assert not noise.mixes and noise.batch_level
    mixing = noise.mixing(10)
    assert mixing.num_classes == 0 and mixing.active and not mixing.mixes  # int labels stay int labels
    x, y = torch.zeros(4, 1, 8, 8), torch.arange(4)
    noisy, labels = mixing(x, y, seed=3)
    assert torch.equal(labels, y) and float(noisy.std()) > 0.1
    assert not SupervisedAugment("trivialaugment").mixing(10).active


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"policy": "foo"}, ValueError, r"bad augmentation policy.*\(token 'foo'\)"),
        ({"policy": "rand-m9-q3"}, ValueError, r"\(token 'q3'\)"),
        ({"policy": 3}, TypeError, "must be a string"),
        ({"mixup_alpha": -1.0}, ValueError, r"mixup_alpha and cutmix_alpha must be >= 0.*got -1\.0, 0\.0"),
        ({"cutmix_alpha": -0.5}, ValueError, r"got 0\.0, -0\.5"),
        ({"mix_prob": 1.5}, ValueError, r"mix_prob and switch_prob must be probabilities, got 1\.5, 0\.5"),
        ({"switch_prob": -0.1}, ValueError, r"got 1\.0, -0\.1"),
        ({"noise_std": -0.1}, ValueError, r"noise_std must be >= 0 \(0 = off\), got -0\.1"),
        ({"hflip": "yes"}, ValueError, r"hflip must be true, false or null, got 'yes'"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SupervisedAugment(**kwargs)


@pytest.mark.parametrize(
    "augment",
    [
        SupervisedAugment(),
        SupervisedAugment(
            "augmix-m5-w3-d2",
            hflip=False,
            mixup_alpha=0.4,
            cutmix_alpha=1.0,
            mix_prob=0.8,
            switch_prob=0.25,
            noise_std=0.05,
        ),
    ],
    ids=repr,
)
def test_config_is_plain_data_that_rebuilds_an_equal_augment(augment: SupervisedAugment) -> None:
    config = augment.config()
    assert config["class_path"] == "lightning_tl.augment.supervised.SupervisedAugment"
    module, _, name = config["class_path"].rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**config["init_args"])
    assert rebuilt.config() == config and repr(rebuilt) == repr(augment)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--augment", type=SupervisedAugment | None)
    made = parser.instantiate(parser.parse_object({"augment": yaml.safe_load(yaml.safe_dump(config))}))
    assert isinstance(made.augment, SupervisedAugment) and made.augment.config() == config
