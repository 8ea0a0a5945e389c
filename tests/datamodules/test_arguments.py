"""Datamodule arguments: few (augmentation lives in objects), and the old flat keys say where they went."""

from __future__ import annotations

import inspect
from typing import Any

import lightning
import pytest
from jsonargparse import ArgumentParser

import lightning_tl.datamodules as datamodules
from lightning_tl.datamodules import DigitsDataModule, VisionDataModule
from lightning_tl.datamodules.moved_args import MOVED

MAX_ARGUMENTS = 14
DATAMODULES = [
    getattr(datamodules, name)
    for name in datamodules.__all__
    if inspect.isclass(getattr(datamodules, name))
    and issubclass(getattr(datamodules, name), lightning.LightningDataModule)
]


def resolved_arguments(cls: type) -> list[str]:
    """The init arguments LightningCLI offers for ``cls``: its own and those its ``**kwargs`` forward to
    its base classes, as jsonargparse resolves them."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    return sorted(vars(parser.get_defaults().data))


def test_every_datamodule_is_checked() -> None:
    names = {cls.__name__ for cls in DATAMODULES}
    assert {"DigitsDataModule", "ImageFolderDataModule", "ImageTextDataModule", "VisionDataModule"} <= names
    base = {
        "augment",
        "batch_size",
        "image_size",
        "loader",
        "num_workers",
        "rgb",
        "seed",
        "train_subset",
        "views",
    }
    assert set(resolved_arguments(VisionDataModule)) == base
    assert base <= set(resolved_arguments(DigitsDataModule))  # **kwargs followed to the base class


@pytest.mark.parametrize("cls", DATAMODULES, ids=lambda cls: cls.__name__)
def test_constructors_take_at_most_14_arguments(cls: type) -> None:
    arguments = resolved_arguments(cls)
    assert len(arguments) <= MAX_ARGUMENTS, f"{cls.__name__} takes {len(arguments)}: {arguments}"


@pytest.mark.parametrize("key", sorted(MOVED))
def test_old_flat_keys_raise_naming_the_new_key(key: str) -> None:
    old: dict[str, Any] = {key: 0.1}
    with pytest.raises(TypeError) as info:
        DigitsDataModule(**old)
    message = str(info.value)
    assert message.startswith(f"DigitsDataModule has no argument {key!r} any more; set it as ")
    assert MOVED[key] in message


def test_old_augmentation_loader_and_split_keys_name_their_new_home() -> None:
    homes = {
        "views: {class_path: lightning_tl.augment.SimCLRViews": [
            "num_views", "crop_scale", "jitter_strength", "blur", "solarize_prob", "local_views",
            "local_image_size", "local_crop_scale", "augment_on_device", "hflip",
        ],
        "augment: {class_path: lightning_tl.augment.SupervisedAugment": [
            "policy", "mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob", "noise_std", "hflip",
        ],
        "loader: {": ["pin_memory", "persistent_workers"],
        "holdout: [val_fraction, test_fraction]": ["val_fraction", "test_fraction"],
        "normalize: [mean, std]": ["mean", "std"],
    }  # fmt: skip
    assert {key for keys in homes.values() for key in keys} <= set(MOVED)
    for home, keys in homes.items():
        assert all(home in MOVED[key] for key in keys), home
    assert "init_args: {on_device: ...}" in MOVED["augment_on_device"]
    assert "num_views: 0 is views: null" in MOVED["num_views"]


def test_other_unknown_keys_are_ordinary_type_errors() -> None:
    with pytest.raises(TypeError, match=r"^DigitsDataModule got an unexpected keyword argument 'num_view'$"):
        DigitsDataModule(num_view=2)
