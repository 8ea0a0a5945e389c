"""Train batches equal, bit for bit, those of commit 1023b1f, before augmentation became a package.

``data/views_1023b1f.safetensors`` holds the first two train batches of six datamodule set-ups, made
with the flat arguments of that commit (the script is quoted in the commit that added the file); the
same set-ups written with view recipes and ``SupervisedAugment`` objects must give the same tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from lightning_tl.augment import SimCLRViews, SupervisedAugment
from lightning_tl.datamodules import DigitsDataModule, DigitsMDataModule

REFERENCE = Path(__file__).with_name("data") / "views_1023b1f.safetensors"

CONFIGS: dict[str, tuple[type, dict[str, Any]]] = {
    "ssl_device": (
        DigitsDataModule,
        {
            "views": SimCLRViews(
                local_views=2,
                local_image_size=8,
                solarize_prob=0.2,
                blur=True,
                hflip=True,
                crop_scale=(0.2, 1.0),
                jitter_strength=0.5,
                on_device=True,
            ),
            "rgb": True,
            "batch_size": 8,
            "seed": 3,
        },
    ),
    "ssl_per_sample": (
        DigitsDataModule,
        {
            "views": SimCLRViews(
                local_views=1,
                solarize_prob=0.2,
                hflip=True,
                crop_scale=(0.3, 1.0),
                jitter_strength=0.4,
                on_device=False,
            ),
            "batch_size": 8,
            "seed": 5,
        },
    ),
    "sup_rand_mix": (
        DigitsDataModule,
        {
            "augment": SupervisedAugment(
                "rand-m9-mstd0.5-inc1", hflip=True, mixup_alpha=0.2, cutmix_alpha=1.0, noise_std=0.1
            ),
            "batch_size": 8,
            "seed": 7,
        },
    ),
    "sup_autoaugment": (
        DigitsDataModule,
        {"augment": SupervisedAugment("autoaugment:cifar10"), "rgb": True, "batch_size": 8, "seed": 1},
    ),
    "sup_plain": (DigitsDataModule, {"batch_size": 8, "seed": 2}),
    "digits_m_trivial": (
        DigitsMDataModule,
        {"augment": SupervisedAugment("trivialaugment"), "batch_size": 8, "seed": 4},
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_batches_equal_the_saved_ones(name: str) -> None:
    reference = load_file(REFERENCE)
    cls, kwargs = CONFIGS[name]
    dm = cls(**kwargs)
    batches = iter(dm.train_dataloader())
    for b in range(2):
        x, y = dm.on_after_batch_transfer(next(batches), 0)
        images = list(x) if isinstance(x, list) else [x]
        keys = (
            [f"{name}/batch{b}/view{v}" for v in range(len(images))]
            if isinstance(x, list)
            else [f"{name}/batch{b}/images"]
        )
        assert all(key in reference for key in keys) and f"{name}/batch{b}/view{len(images)}" not in reference
        for key, image in zip(keys, images, strict=True):
            assert image.dtype == reference[key].dtype and torch.equal(image, reference[key]), key
        assert torch.equal(torch.as_tensor(y), reference[f"{name}/batch{b}/labels"])
