"""Datamodule arguments that moved into objects: a clear error that names the new place.

Augmentation options used to be flat datamodule arguments (24 of them); they now live in the
``views:`` recipe, the ``augment:`` object or the ``loader:`` options, and hold-out fractions and
normalisation constants in one argument each; the source of the image-caption pairs of
:class:`~lightning_tl.datamodules.ImageTextDataModule` is one ``dataset`` object. An old key raises
:class:`TypeError` saying where it went, in Python and (through :mod:`lightning_tl.cli_errors`) on the
command line.
"""

from __future__ import annotations

from typing import Any

from lightning_tl.unexpected_args import refuse_unexpected_args

_VIEWS = "views: {class_path: lightning_tl.augment.SimCLRViews, init_args: {%s: ...}}"
_AUGMENT = "augment: {class_path: lightning_tl.augment.SupervisedAugment, init_args: {%s: ...}}"
_CAPTIONS = "(ImageTextDataModule) dataset: {class_path: lightning_tl.datamodules.%s, init_args: {%%s: ...}}"
_FILE = _CAPTIONS % "CaptionFile"
_SHARDS = _CAPTIONS % "CaptionShards"

#: Old flat key -> where it is set now.
MOVED: dict[str, str] = {
    "num_views": (
        "views: {class_path: lightning_tl.augment.SimCLRViews, init_args: {num_views: N}} "
        "(num_views: 0 is views: null)"
    ),
    **{key: _VIEWS % key for key in ("crop_scale", "jitter_strength", "blur", "solarize_prob")},
    **{key: _VIEWS % key for key in ("local_views", "local_image_size", "local_crop_scale")},
    "augment_on_device": _VIEWS % "on_device",
    "hflip": f"{_VIEWS % 'hflip'} or {_AUGMENT % 'hflip'}",
    **{key: _AUGMENT % key for key in ("policy", "mixup_alpha", "cutmix_alpha", "mix_prob", "switch_prob")},
    "noise_std": _AUGMENT % "noise_std",
    "pin_memory": "loader: {pin_memory: true}",
    "persistent_workers": "loader: {persistent_workers: true}",
    "val_fraction": "holdout: [val_fraction, test_fraction]",
    "test_fraction": "holdout: [val_fraction, test_fraction]",
    "mean": "normalize: [mean, std]",
    "std": "normalize: [mean, std]",
    # ImageTextDataModule: the source of image-caption pairs is one ``dataset`` object
    "annotations": _FILE % "path",
    **{key: _FILE % key for key in ("image_root", "image_column", "caption_column", "label_column")},
    "class_names": f"{_FILE % 'class_names'} or {_SHARDS % 'class_names'}",
    "shards": _SHARDS % "train",
    "val_shards": _SHARDS % "val",
}


_HINTS = {key: f"set it as {place}" for key, place in MOVED.items()}


def check_removed_args(owner: str, removed: dict[str, Any]) -> None:
    """Raise TypeError for keyword arguments ``owner`` does not take, naming the new key of moved ones."""
    refuse_unexpected_args(owner, removed, _HINTS)
