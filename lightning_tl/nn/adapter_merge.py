"""Folding residual adapters back into a plain ResNet, and saving one domain's parameters.

Which adapters fold (for inference, i.e. BatchNorm with running statistics):

* parallel, always: ``f*x + W*x`` is one convolution whose kernel is f's with W added to the
  centre tap, because W has f's stride and groups and f has "same" padding (checked at injection);
  this holds for any stride, dilation and group count.
* series, always with running statistics: BN(z) = a z + b is affine, so ``z + W(a z + b)`` is
  ``M z + W b`` with ``M = I + W diag(a)``; ``M (f*x)`` is the convolution with kernel ``M f``
  (W has f's groups, so M is block-diagonal and keeps f's grouping), and the constant ``W b`` is
  absorbed by the following BatchNorm's running mean (or f's bias when it has one). In training
  mode the adapter's BN normalises with batch statistics, a function of the whole batch, which no
  fixed convolution can reproduce: merge for inference.

The merged network has exactly the parameters of the original architecture: f's kernel, the
active domain's BatchNorm layers and head.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lightning_tl.nn.adapters import BLOCKS, AdaptedConv, ParallelAdapter, SeriesAdapter, _replace
from lightning_tl.nn.domains import (
    DomainBatchNorm2d,
    check_domain,
    domain_layers,
    get_domain,
    model_domains,
)


@torch.no_grad()
def merge_adapters(model: nn.Module, domain: str | None = None) -> nn.Module:
    """A plain copy of an adapter network for ``domain`` (default: the active one), same outputs.

    Adapters are folded into their convolutions, per-domain BatchNorm and heads become the domain's
    plain layers. ``model`` itself is left unchanged. Compare outputs in ``eval()`` mode.

    Raises:
        ValueError: the model has no adapters, or ``domain`` is unknown.
    """
    domain = domain if domain is not None else get_domain(model)
    check_domain(domain, model_domains(model))
    merged = copy.deepcopy(model)
    for block in merged.modules():
        for conv_name, bn_name in BLOCKS.get(type(block), ()):
            adapted = getattr(block, conv_name)
            if isinstance(adapted, AdaptedConv):
                bn = getattr(block, bn_name)
                norm = bn.for_domain(domain) if isinstance(bn, DomainBatchNorm2d) else bn
                setattr(block, conv_name, _fold(adapted, domain, norm))
    for path, layer in list(domain_layers(merged)):
        if path and not isinstance(layer, AdaptedConv):
            _replace(merged, path, layer.for_domain(domain))
    leftover = [p for p, _ in domain_layers(merged)]
    if leftover:
        raise ValueError(f"could not fold domain layers {leftover} (adapters outside known ResNet blocks)")
    return merged


def _fold(adapted: AdaptedConv, domain: str, norm: nn.Module) -> nn.Conv2d:
    conv = copy.deepcopy(adapted.conv)
    adapter = adapted.for_domain(domain)
    weight = conv.weight  # (C_out, C_in / g, kh, kw)
    if isinstance(adapter, ParallelAdapter):
        kh, kw = weight.shape[-2:]
        weight[:, :, kh // 2, kw // 2] += adapter.conv.weight[:, :, 0, 0]
        return conv
    assert isinstance(adapter, SeriesAdapter)
    bn = adapter.bn
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a series adapter folds with its BatchNorm's running statistics; it has none")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)  a
    shift = bn.bias - bn.running_mean * scale  # (C,)  b
    w = _dense(adapter.conv.weight[:, :, 0, 0], conv.groups)  # (C, C) block-diagonal
    mix = torch.eye(w.shape[0], dtype=w.dtype) + w * scale  # (C, C)  M = I + W diag(a)
    weight.copy_(torch.einsum("om,mikl->oikl", mix, weight))  # (C_out, C_in / g, kh, kw)
    offset = w @ shift  # (C,)  W b
    if conv.bias is not None:
        conv.bias.copy_(mix @ conv.bias + offset)
    elif isinstance(norm, nn.BatchNorm2d) and norm.running_mean is not None:
        norm.running_mean -= offset  # BN(z + c) with mean m == BN(z) with mean m - c
    else:
        raise ValueError(
            "a series adapter's constant term needs a conv bias or a following BatchNorm with running "
            f"statistics to fold into; found {type(norm).__name__}"
        )
    return conv


def _dense(w: Tensor, groups: int) -> Tensor:
    """(C, C / g) grouped 1x1 weights -> (C, C) block-diagonal matrix."""
    return torch.block_diag(*w.chunk(groups, dim=0)) if groups > 1 else w


def adapter_state_dict(model: nn.Module, domain: str) -> dict[str, Tensor]:
    """One domain's adapters, BatchNorm layers (parameters and statistics) and head.

    Keys are ``<layer path>.<parameter>`` without the domain name, so they load into any domain of
    a network with the same architecture (:func:`load_adapter_state_dict`).
    """
    check_domain(domain, model_domains(model))
    state: dict[str, Tensor] = {}
    for path, layer in domain_layers(model):
        for key, value in layer.for_domain(domain).state_dict().items():
            state[f"{path}.{key}"] = value.detach().clone()
    return state


@torch.no_grad()
def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor], domain: str) -> None:
    """Load :func:`adapter_state_dict` output into ``domain`` of ``model``; keys and shapes must match.

    Raises:
        ValueError: unknown domain, missing or unexpected keys, or shapes that differ.
    """
    expected = adapter_state_dict(model, domain)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"adapter state does not fit domain {domain!r}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}; was it saved from a network of the same architecture and adapter kind?"
        )
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"{key!r} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    for path, layer in domain_layers(model):
        sub = layer.for_domain(domain)
        prefix = f"{path}."
        sub.load_state_dict({k: state[prefix + k] for k in sub.state_dict()}, strict=True)
