"""Policy transforms (torchvision v2) for the parts of timm's policy grammar torchvision cannot express.

torchvision's ``AutoAugment`` / ``RandAugment`` / ``AugMix`` fix their op sets, their magnitude bins
and draw fixed magnitudes; timm's policy strings add magnitude noise (``mstd``), magnitude caps
(``mmax``), a per-op probability (``p``), weighted op choice (``t``), the ``*Increasing`` op variants
and other policies (``v0``, ``3a``). These transforms implement those semantics on uint8 (C, H, W)
tensors with the operations of :mod:`~lightning_tl.augment.augment_ops`; every random draw uses
torch's global generator, so a per-sample seed makes them reproducible. Non-image inputs (labels)
pass through unchanged, as with any v2 transform.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from lightning_tl.augment.augment_ops import LEVEL_DENOM, OpParams, apply_op, check_op

#: One operation of a sub-policy: (op name, probability, level in [0, 10]).
OpTriple = tuple[str, float, float]


def sample_level(magnitude: float, magnitude_std: float, magnitude_max: float = LEVEL_DENOM) -> float:
    """timm's magnitude noise: ``magnitude`` as is (std 0), N(magnitude, std) (std > 0), or uniform in
    [0, magnitude] (std = inf); then clipped to [0, magnitude_max]."""
    level = magnitude
    if math.isinf(magnitude_std):
        level = magnitude * float(torch.rand(()))
    elif magnitude_std > 0:
        level = magnitude + magnitude_std * float(torch.randn(()))
    return min(max(level, 0.0), magnitude_max)


def _check_image(inpt: Any) -> Tensor:
    if not isinstance(inpt, Tensor) or inpt.dtype != torch.uint8 or inpt.ndim != 3:
        got = f"{inpt.dtype} {tuple(inpt.shape)}" if isinstance(inpt, Tensor) else type(inpt).__name__
        raise TypeError(f"policy transforms take uint8 (C, H, W) image tensors, got {got}")
    return inpt


class _PolicyTransform(v2.Transform):
    """Base: a v2 transform on the image tensor (labels and other inputs pass through)."""

    def __init__(self, magnitude_std: float = 0.0, magnitude_max: float = LEVEL_DENOM) -> None:
        super().__init__()
        if magnitude_std < 0:
            raise ValueError(f"magnitude_std must be >= 0 (inf: uniform in [0, m]), got {magnitude_std}")
        if magnitude_max <= 0:
            raise ValueError(f"magnitude_max must be > 0, got {magnitude_max}")
        self.magnitude_std = magnitude_std
        self.magnitude_max = magnitude_max
        self.op_params = OpParams()

    def _op(self, img: Tensor, name: str, prob: float, magnitude: float) -> Tensor:
        if prob < 1.0 and not bool(torch.rand(()) < prob):
            return img
        level = sample_level(magnitude, self.magnitude_std, self.magnitude_max)
        return apply_op(img, name, level, self.op_params)


def _check_triples(sub_policy: Sequence[OpTriple]) -> None:
    for name, prob, level in sub_policy:
        check_op(name)
        if not 0 <= prob <= 1:
            raise ValueError(f"probability of {name} must be in [0, 1], got {prob}")
        if not 0 <= level <= LEVEL_DENOM:
            raise ValueError(f"level of {name} must be in [0, {LEVEL_DENOM:g}], got {level}")


class SubPolicyAugment(_PolicyTransform):
    """AutoAugment-style policy: pick one sub-policy uniformly, apply each of its ops with its probability.

    Cubuk et al., "AutoAugment", CVPR 2019 (arXiv:1805.09501): "for every image in each mini-batch,
    we choose a sub-policy uniformly at random". Used for timm's named policies (``v0``, ``original``
    ...) and for the policies found by ``lightning-tl augsearch``.

    Args:
        sub_policies: list of sub-policies, each a list of ``(op, probability, level)``.
        magnitude_std: timm's ``mstd`` magnitude noise (0: the listed levels exactly).
    """

    def __init__(self, sub_policies: Sequence[Sequence[OpTriple]], magnitude_std: float = 0.0) -> None:
        super().__init__(magnitude_std)
        if not sub_policies or any(len(sp) == 0 for sp in sub_policies):
            raise ValueError("SubPolicyAugment needs at least one non-empty sub-policy")
        for sub_policy in sub_policies:
            _check_triples(sub_policy)
        self.sub_policies = [[(n, float(p), float(m)) for n, p, m in sp] for sp in sub_policies]

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        img = _check_image(inpt)
        choice = int(torch.randint(len(self.sub_policies), ()))
        for name, prob, level in self.sub_policies[choice]:
            img = self._op(img, name, prob, level)
        return img


class TimmRandAugment(_PolicyTransform):
    """RandAugment with timm's options: ``num_ops`` ops, each applied with probability ``prob``.

    Cubuk et al., "RandAugment", NeurIPS 2020 (arXiv:1909.13719) apply N ops at one global magnitude
    M; timm applies each with probability ``prob`` (0.5 by default) and adds magnitude noise. Ops are
    drawn uniformly with replacement, or, with ``weights``, in proportion to them without replacement.

    Args:
        ops: operation names.
        num_ops: ops per image (N).
        magnitude: level M in [0, magnitude_max].
        prob: probability of applying each drawn op.
        magnitude_std: N(M, std) per op application; inf: uniform in [0, M].
        magnitude_max: upper clip of the sampled level (timm's ``mmax``, default 10).
        weights: relative choice weights, one per op, or None for uniform choice.
    """

    def __init__(
        self,
        ops: Sequence[str],
        num_ops: int = 2,
        magnitude: float = 10.0,
        prob: float = 0.5,
        magnitude_std: float = 0.0,
        magnitude_max: float = LEVEL_DENOM,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(magnitude_std, magnitude_max)
        for name in ops:
            check_op(name)
        if num_ops < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops}")
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if weights is not None and (len(weights) != len(ops) or any(w < 0 for w in weights)):
            raise ValueError(f"weights need one non-negative value per op ({len(ops)}), got {weights}")
        if weights is not None and num_ops > sum(w > 0 for w in weights):
            raise ValueError(
                f"num_ops={num_ops} exceeds the ops with a positive weight (drawn without replacement)"
            )
        self.ops = list(ops)
        self.num_ops = num_ops
        self.magnitude = float(magnitude)
        self.prob = prob
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        img = _check_image(inpt)
        if self.weights is None:
            picks = torch.randint(len(self.ops), (self.num_ops,)).tolist()
        else:
            picks = torch.multinomial(self.weights, self.num_ops, replacement=False).tolist()
        for k in picks:
            img = self._op(img, self.ops[k], self.prob, self.magnitude)
        return img


class TimmAugMix(_PolicyTransform):
    """AugMix (Hendrycks et al., ICLR 2020, arXiv:1912.02781) with timm's options.

    ``width`` chains of ``depth`` random ops (depth -1: 1-3, drawn per chain), each op at a level
    drawn with ``magnitude_std`` around ``magnitude`` (timm's default std is inf: uniform in [0, m]).
    The chains are mixed with Dirichlet(alpha) weights and the mix is blended with the original with
    a Beta(alpha, alpha) factor. ``blended=True`` folds each chain into the result in turn with the
    equivalent sequence of blends (timm's cheaper ``b1`` mode; same expectation, uint8 rounding per step).
    """

    def __init__(
        self,
        ops: Sequence[str],
        magnitude: float = 3.0,
        width: int = 3,
        depth: int = -1,
        alpha: float = 1.0,
        magnitude_std: float = math.inf,
        blended: bool = False,
    ) -> None:
        super().__init__(magnitude_std)
        for name in ops:
            check_op(name)
        if width < 1 or depth == 0 or depth < -1:
            raise ValueError(f"width must be >= 1 and depth >= 1 or -1 (random 1-3), got {width}, {depth}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.ops = list(ops)
        self.magnitude = float(magnitude)
        self.width = width
        self.depth = depth
        self.alpha = alpha
        self.blended = blended

    def _chain(self, img: Tensor) -> Tensor:
        depth = self.depth if self.depth > 0 else int(torch.randint(1, 4, ()))
        for k in torch.randint(len(self.ops), (depth,)).tolist():
            img = self._op(img, self.ops[k], 1.0, self.magnitude)
        return img

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        img = _check_image(inpt)
        alpha = torch.full((self.width,), self.alpha, dtype=torch.float64)
        weights = torch._sample_dirichlet(alpha).tolist()  # (width,), sums to 1
        m = float(torch._sample_dirichlet(torch.tensor([self.alpha, self.alpha], dtype=torch.float64))[0])
        if self.blended:  # result = (1-m) img + m sum_i w_i chain_i, as successive two-image blends
            ratios, rest = [], 1.0
            for w in reversed(weights):  # chain i gets ratio r_i with r_i * prod_{j > i} (1 - r_j) = m w_i
                ratios.append(w * m / rest)
                rest *= 1 - ratios[-1]
            out = img
            for ratio in reversed(ratios):
                blended = (1 - ratio) * out.float() + ratio * self._chain(img).float()
                out = blended.round().clamp_(0, 255).to(torch.uint8)
            return out
        mixed = torch.zeros(img.shape, dtype=torch.float32)  # (C, H, W)
        for w in weights:
            mixed += w * self._chain(img).float()
        mixed = mixed.clamp_(0, 255).to(torch.uint8).float()  # timm rounds the mix to uint8 first
        return ((1 - m) * img.float() + m * mixed).round().clamp_(0, 255).to(torch.uint8)
