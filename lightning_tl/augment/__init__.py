"""Augmentation: view recipes, per-sample and batched executors, policies and batch mixing.

A leaf package: it imports nothing from :mod:`lightning_tl.datamodules` or :mod:`lightning_tl.modules`.

- View recipes (:class:`SimCLRViews`, :class:`MoCoV2Views`, :class:`BYOLViews`, :class:`DINOViews`)
  list one :class:`ViewSpec` per view; :func:`view_transform` draws a view per sample with torchvision,
  :class:`BatchViews` draws all views of a batch at once (a compiled kernel on CPUs).
- :class:`SupervisedAugment`: crop, flip and a policy per sample (:func:`build_policy`: AutoAugment,
  RandAugment, TrivialAugment, AugMix, timm strings), mixup / CutMix / noise per batch (:class:`BatchMixing`).
- Randomness is counter-based (:mod:`~lightning_tl.augment.counter_rng`): every sample's draws come from
  its own seed, carried with the images in a :class:`SeededBatch`.
"""

from lightning_tl.augment.batch import SeededBatch, batch_seed
from lightning_tl.augment.batch_views import BatchViews
from lightning_tl.augment.counter_rng import mix_seed
from lightning_tl.augment.mixing import BatchMixing
from lightning_tl.augment.policies import PolicySpec, build_policy, parse_policy
from lightning_tl.augment.supervised import SupervisedAugment
from lightning_tl.augment.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiViewTransform,
    normalize,
    simclr_view_transform,
    view_transform,
)
from lightning_tl.augment.view_spec import ViewSpec
from lightning_tl.augment.views import BYOLViews, DINOViews, MoCoV2Views, SimCLRViews, ViewRecipe

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BYOLViews",
    "BatchMixing",
    "BatchViews",
    "DINOViews",
    "MoCoV2Views",
    "MultiViewTransform",
    "PolicySpec",
    "SeededBatch",
    "SimCLRViews",
    "SupervisedAugment",
    "ViewRecipe",
    "ViewSpec",
    "batch_seed",
    "build_policy",
    "mix_seed",
    "normalize",
    "parse_policy",
    "simclr_view_transform",
    "view_transform",
]
