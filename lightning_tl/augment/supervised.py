"""Supervised training augmentation as one object: crop and flip, a policy, and batch mixing.

A datamodule takes one as ``augment:`` (in YAML, ``class_path: lightning_tl.augment.SupervisedAugment``
with ``init_args``). Per sample: a random crop after zero padding and a horizontal flip (the standard
CIFAR recipe), then the ``policy`` (AutoAugment, RandAugment, TrivialAugment, AugMix, timm strings:
:func:`~lightning_tl.augment.build_policy`), applied "in addition to the standard baseline
pre-processing" as in the AutoAugment paper (Cubuk et al. 2019). Per batch, on the device: mixup,
CutMix and Gaussian noise (:class:`~lightning_tl.augment.BatchMixing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning_tl.augment.mixing import BatchMixing, check_mixing_args
from lightning_tl.augment.policies import build_policy, parse_policy
from lightning_tl.augment.transforms import light_augment_steps
from lightning_tl.config_object import ConfigObject


class SupervisedAugment(ConfigObject):
    """The train-time augmentation of supervised (fine-tuning, domain adaptation) batches.

    Args:
        policy: augmentation policy spec (``none``, ``autoaugment:cifar10``, ``rand-m9-mstd0.5-inc1``,
            ``trivialaugment``, ...; :func:`~lightning_tl.augment.parse_policy` lists the grammar).
        hflip: random horizontal flips; None takes the datamodule's default (off for digits).
        mixup_alpha, cutmix_alpha, mix_prob, switch_prob, noise_std: per-batch vicinal risk
            minimisation (:class:`~lightning_tl.augment.BatchMixing`); with mixup or CutMix on, train
            batches carry soft targets (B, num_classes).

    Example::

        >>> SupervisedAugment("trivialaugment", mixup_alpha=0.2).mixes
        True
    """

    def __init__(
        self,
        policy: str = "none",
        hflip: bool | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        noise_std: float = 0.0,
    ) -> None:
        parse_policy(policy)  # a bad spec fails here, naming its bad token
        check_mixing_args(mixup_alpha, cutmix_alpha, mix_prob, switch_prob, noise_std)
        if hflip is not None and not isinstance(hflip, bool):
            raise ValueError(f"hflip must be true, false or null, got {hflip!r}")
        self.policy = policy.strip()
        self.hflip = hflip
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = mix_prob
        self.switch_prob = switch_prob
        self.noise_std = noise_std

    @property
    def mixes(self) -> bool:
        """Whether batches get mixed labels (mixup or CutMix on)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def batch_level(self) -> bool:
        """Whether anything happens per batch on the device (mixing or noise)."""
        return self.mixes or self.noise_std > 0

    def steps(self, image_size: int, hflip: bool = True) -> list[Callable[[Any], Any]]:
        """Per-sample uint8 -> uint8 steps: padded random crop, flip (``hflip`` default), the policy."""
        flip = self.hflip if self.hflip is not None else hflip
        return [*light_augment_steps(image_size, flip), build_policy(self.policy)]

    def mixing(self, num_classes: int) -> BatchMixing:
        """The per-batch mixing for ``num_classes`` classes (0 when only noise is on)."""
        return BatchMixing(
            num_classes if self.mixes else 0,
            mixup_alpha=self.mixup_alpha,
            cutmix_alpha=self.cutmix_alpha,
            mix_prob=self.mix_prob,
            switch_prob=self.switch_prob,
            noise_std=self.noise_std,
        )
