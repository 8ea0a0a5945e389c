"""LoRA: low-rank updates of frozen Linear and Conv2d layers, mergeable into their weights.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (arXiv 2106.09685):
``h = W0 x + (alpha / r) B A x`` with A (r, in) random and B (out, r) zero at the start, so the
adapted layer starts as the pre-trained one; W0 stays frozen; after training ``W0 + (alpha/r) BA``
replaces W0 (no inference cost). The transformer counterpart of residual adapters.

Fused projections such as timm ViT's ``qkv`` Linear (one (3D, D) matrix for queries, keys and
values) can get separate low-rank updates for chosen parts only (``parts="qv"``: the paper's
choice of W_q and W_v, Sec. 7.1), each of rank r.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check(rank: int, alpha: float, dropout: float) -> None:
    if not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
    if not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")


class _Mergeable(nn.Module):
    """Merging of a LoRA layer's update ``delta_weight()`` into its frozen ``base.weight``, and back."""

    base: nn.Linear | nn.Conv2d
    merged: bool

    def delta_weight(self) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``base.weight`` (no-op if merged)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from ``base.weight`` again (no-op if not merged)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False


class LoRALinear(_Mergeable):
    """``base(x) + (alpha / rank) * B A dropout(x)`` around a frozen ``nn.Linear``.

    Args:
        base: the pre-trained layer (frozen here).
        rank, alpha, dropout: r, alpha and the dropout on the LoRA branch's input.
        parts: split the output into ``len(parts)`` equal slices (e.g. ``"qkv"``) ...
        adapt: ... and adapt only these slices (e.g. ``"qv"``). None: one update of the whole matrix.
    """

    base: nn.Linear

    def __init__(
        self,
        base: nn.Linear,
        rank: int = 4,
        alpha: float = 8.0,
        dropout: float = 0.0,
        parts: str | None = None,
        adapt: str | None = None,
    ) -> None:
        super().__init__()
        _check(rank, alpha, dropout)
        parts, adapt = parts or "w", adapt or (parts or "w")
        if base.out_features % len(parts) or not set(adapt) <= set(parts) or not adapt:
            raise ValueError(
                f"cannot adapt parts {adapt!r} of {parts!r}: the parts must split out_features="
                f"{base.out_features} evenly and adapt must name some of them"
            )
        base.requires_grad_(False)
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.parts, self.adapt = parts, adapt
        self.dropout = nn.Dropout(dropout)
        size = base.out_features // len(parts)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(
            torch.empty(len(adapt) * rank, base.in_features, device=device, dtype=dtype)
        )
        self.lora_B = nn.Parameter(torch.zeros(len(adapt), size, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear; B = 0 makes BA = 0
        self.merged = False

    def delta_weight(self) -> Tensor:
        """(out, in): the low-rank update ``(alpha/r) B A``, zero on parts that are not adapted."""
        a = self.lora_A.view(len(self.adapt), self.rank, -1)  # (P, r, in)
        per_part = torch.bmm(self.lora_B, a) * self.scaling  # (P, out / parts, in)
        full = per_part.new_zeros(len(self.parts), *per_part.shape[1:])  # (parts, out / parts, in)
        full[self._adapted_index] = per_part
        return full.flatten(0, 1)  # (out, in)

    @property
    def _adapted_index(self) -> list[int]:
        return [self.parts.index(p) for p in self.adapt]

    def forward(self, x: Tensor) -> Tensor:
        """(..., in) -> (..., out)."""
        y = self.base(x)
        if self.merged:
            return y
        h = F.linear(self.dropout(x), self.lora_A)  # (..., P * r)
        h = h.unflatten(-1, (len(self.adapt), self.rank))  # (..., P, r)
        z = torch.einsum("...pr,pdr->...pd", h, self.lora_B) * self.scaling  # (..., P, out / parts)
        full = z.new_zeros(*z.shape[:-2], len(self.parts), z.shape[-1])  # (..., parts, out / parts)
        full[..., self._adapted_index, :] = z
        return y + full.flatten(-2)  # (..., out)


class LoRAConv2d(_Mergeable):
    """``base(x) + (alpha / rank) * B(A(dropout(x)))`` around a frozen ``nn.Conv2d``.

    A is a conv with ``base``'s kernel, stride, padding and dilation but ``rank`` output channels;
    B a zero-initialised 1x1 conv back to ``out_channels``, so ``B o A`` is a conv whose kernel
    (out, in, kh, kw) has rank <= r when flattened to (out, in*kh*kw) and merges into ``base``.

    Raises:
        ValueError: a grouped convolution (its update would not be one low-rank matrix).
    """

    base: nn.Conv2d

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        _check(rank, alpha, dropout)
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d supports groups=1 convolutions, got groups={base.groups}")
        base.requires_grad_(False)
        self.base = base
        self.rank, self.scaling = rank, alpha / rank
        self.dropout = nn.Dropout(dropout)
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(
            torch.empty(rank, base.in_channels, *base.kernel_size, device=device, dtype=dtype)
        )
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    def delta_weight(self) -> Tensor:
        """(out, in, kh, kw): the update ``(alpha/r) B A``."""
        return torch.einsum("or,rikl->oikl", self.lora_B, self.lora_A) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        """(B, in, H, W) -> (B, out, H', W')."""
        y = self.base(x)
        if self.merged:
            return y
        base = self.base
        h = base._conv_forward(self.dropout(x), self.lora_A, None)  # (B, r, H', W')
        return y + torch.einsum("or,brhw->bohw", self.lora_B, h) * self.scaling


def inject_lora(
    model: nn.Module,
    target: str | Sequence[str] = r".*\.qkv",
    rank: int = 4,
    alpha: float = 8.0,
    dropout: float = 0.0,
    qkv_parts: str | None = None,
    freeze: bool = True,
) -> list[str]:
    """Wrap every Linear/Conv2d whose name fully matches a ``target`` regex in LoRA; return their names.

    Args:
        target: regular expression(s) matched against module paths (``re.fullmatch``), e.g.
            ``r".*\\.qkv"`` (timm ViT attention) or ``[r".*\\.attn\\.qkv", r".*\\.mlp\\.fc1"]``.
        rank, alpha, dropout: LoRA hyper-parameters (Hu et al.: alpha / r scales the update).
        qkv_parts: for Linear layers whose name ends in ``qkv``, the parts to adapt, e.g. ``"qv"``;
            None adapts the whole fused matrix.
        freeze: freeze every parameter of ``model`` except the LoRA matrices.

    Raises:
        ValueError: rank <= 0, bad alpha/dropout, no module matched, or bad ``qkv_parts``.
        TypeError: a matched module is neither ``nn.Linear`` nor ``nn.Conv2d``.
    """
    _check(rank, alpha, dropout)
    patterns = [target] if isinstance(target, str) else list(target)
    matched = [(n, m) for n, m in model.named_modules() if n and any(re.fullmatch(p, n) for p in patterns)]
    if not matched:
        names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ValueError(f"no module matches {patterns}; Linear/Conv2d modules are e.g. {names[:8]}")
    for name, module in matched:
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or isinstance(module, (LoRALinear, LoRAConv2d)):
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv2d; {name!r} is {type(module).__name__}")
    if freeze:
        model.requires_grad_(False)
    for name, module in matched:
        layer: nn.Module
        if isinstance(module, nn.Linear):
            fused = qkv_parts is not None and name.endswith("qkv")
            parts, adapt = ("qkv", qkv_parts) if fused else (None, None)
            layer = LoRALinear(module, rank, alpha, dropout, parts=parts, adapt=adapt)
        else:
            layer = LoRAConv2d(module, rank, alpha, dropout)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer)
    return [n for n, _ in matched]


def _lora_layers(model: nn.Module) -> list[LoRALinear | LoRAConv2d]:
    layers = [m for m in model.modules() if isinstance(m, (LoRALinear, LoRAConv2d))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers; call inject_lora first")
    return layers


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight (inference without the extra branch)."""
    for layer in _lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora` (e.g. to continue training)."""
    for layer in _lora_layers(model):
        layer.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the LoRA matrices (``...lora_A`` / ``...lora_B``) of ``model``."""
    return {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if k.rsplit(".", 1)[-1] in ("lora_A", "lora_B")
    }
