"""Vicinal risk minimisation per batch, on the device: mixup, CutMix and Gaussian input noise.

Training on a *vicinal* distribution around each example instead of the empirical one (Chapelle,
Weston, Bottou, Vapnik, "Vicinal Risk Minimization", NIPS 2000): Gaussian vicinities add
N(0, sigma^2) noise to the inputs; mixup (Zhang et al., ICLR 2018, arXiv:1710.09412) trains on
``lam * x_i + (1 - lam) * x_j`` with the same mix of one-hot labels, ``lam ~ Beta(alpha, alpha)``;
CutMix (Yun et al., ICCV 2019, arXiv:1905.04899) pastes a box of ``x_j`` covering a ``1 - lam``
fraction of the image into ``x_i`` and mixes the labels by the box's actual area.

One ``lam`` per batch and a random pairing (a permutation of the batch), as in both papers. All draws
come from a generator seeded with the batch's seed, so a batch is mixed the same way on every run,
on resume and whatever the worker count. Under DDP each process mixes its own batch (pairs never
cross processes), which is what the reference implementations do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """int labels (B,) -> float one-hot (B, num_classes); raises on labels outside [0, num_classes)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"mixup/CutMix need labels in [0, {num_classes}), got values in "
            f"[{int(labels.min())}, {int(labels.max())}] (unlabelled data cannot be mixed)"
        )
    return F.one_hot(labels.long(), num_classes).float()


def mixup(images: Tensor, targets: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """``lam * x + (1 - lam) * x[perm]`` for images (B, C, H, W) and soft targets (B, K)."""
    mixed = lam * images + (1.0 - lam) * images[perm]
    return mixed, lam * targets + (1.0 - lam) * targets[perm]


def cutmix_box(lam: float, height: int, width: int, u: tuple[float, float]) -> tuple[int, int, int, int]:
    """CutMix box ``(top, bottom, left, right)``: sides ``sqrt(1 - lam)`` of the image's, centre at the
    uniform draws ``u`` (fractions of height and width), clipped to the image (Yun et al. 2019, eq. 2)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(u[0] * height), int(u[1] * width)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix(
    images: Tensor, targets: Tensor, lam: float, perm: Tensor, u: tuple[float, float]
) -> tuple[Tensor, Tensor, float]:
    """Paste the CutMix box of ``images[perm]`` into ``images``; labels mixed by the pasted area.

    Returns the mixed images (B, C, H, W), targets (B, K) and the effective ``lam`` (1 - box area
    fraction, after clipping the box to the image).
    """
    height, width = images.shape[-2:]
    top, bottom, left, right = cutmix_box(lam, height, width, u)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm][:, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, lam * targets + (1.0 - lam) * targets[perm], lam


@dataclass(frozen=True)
class BatchMixing:
    """Per-batch VRM: with probability ``mix_prob`` mixup or CutMix, then Gaussian noise.

    Args:
        num_classes: K of the soft targets (B, K).
        mixup_alpha: Beta(alpha, alpha) of mixup's ``lam``; 0 turns mixup off (Zhang et al. use 0.1-0.4
            on ImageNet, 1 on CIFAR-10).
        cutmix_alpha: Beta(alpha, alpha) of CutMix's ``lam``; 0 turns it off (Yun et al. use 1).
        mix_prob: probability that a batch is mixed at all.
        switch_prob: with both on, probability of CutMix instead of mixup for a mixed batch.
        noise_std: std of the Gaussian noise added to the (normalised) inputs; 0 turns it off.
    """

    num_classes: int
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        check_mixing_args(
            self.mixup_alpha, self.cutmix_alpha, self.mix_prob, self.switch_prob, self.noise_std
        )
        if self.num_classes < 1 and self.mixes:
            raise ValueError(f"mixup/CutMix need num_classes >= 1, got {self.num_classes}")

    @property
    def mixes(self) -> bool:
        """Whether batches get mixed labels (mixup or CutMix on)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    @property
    def active(self) -> bool:
        """Whether this changes batches at all."""
        return self.mixes or self.noise_std > 0

    def __call__(self, images: Tensor, labels: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """images (B, C, H, W) float, labels (B,) int -> (images, targets): targets are (B, K) soft
        labels when mixing is on, else the int labels unchanged. ``seed`` fixes every draw."""
        rng = np.random.default_rng(seed)
        targets: Tensor = labels
        if self.mixes:
            targets = one_hot(labels, self.num_classes).to(images.dtype)
            if rng.random() < self.mix_prob:
                use_cutmix = self.cutmix_alpha > 0 and (
                    self.mixup_alpha == 0 or rng.random() < self.switch_prob
                )
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
                lam = float(rng.beta(alpha, alpha))
                perm = torch.from_numpy(rng.permutation(images.shape[0])).to(images.device)
                if use_cutmix:
                    images, targets, _ = cutmix(images, targets, lam, perm, (rng.random(), rng.random()))
                else:
                    images, targets = mixup(images, targets, lam, perm)
        if self.noise_std > 0:
            g = torch.Generator(device=images.device).manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(images.shape, generator=g, device=images.device, dtype=images.dtype)
            images = images + self.noise_std * noise
        return images, targets


def check_mixing_args(
    mixup_alpha: float, cutmix_alpha: float, mix_prob: float, switch_prob: float, noise_std: float
) -> None:
    """Raise ``ValueError`` naming the first out-of-range VRM option."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(
            "mixup_alpha and cutmix_alpha must be >= 0 (0 = off; e.g. 0.2 / 1.0), "
            f"got {mixup_alpha}, {cutmix_alpha}"
        )
    if not 0 <= mix_prob <= 1 or not 0 <= switch_prob <= 1:
        raise ValueError(f"mix_prob and switch_prob must be probabilities, got {mix_prob}, {switch_prob}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0 (0 = off), got {noise_std}")
