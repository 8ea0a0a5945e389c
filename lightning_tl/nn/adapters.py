"""Residual adapters for torchvision and timm ResNets: series (2017) and parallel (2018) forms.

Rebuffi, Bilen and Vedaldi, "Learning multiple visual domains with residual adapters", NeurIPS 2017
(series) and "Efficient parametrization of multi-domain deep neural networks", CVPR 2018 (parallel):
one frozen ResNet serves many domains; each domain adds a 1x1 convolution to every 3x3 convolution
of the residual blocks, its own batch normalisation and its own classifier.

* series: after the 3x3 convolution f, ``y = z + W (BN(z))`` with ``z = f * x`` and W a 1x1 conv:
  the paper's ``diag(I + alpha) * f``; W starts at zero, so the adapter starts as the identity.
* parallel: beside the 3x3 convolution, ``y = f * x + W * x`` with W a 1x1 conv with f's stride:
  the paper's ``(f + diag_L(alpha)) * x``; W starts at zero.

Which convolutions are adapted: the 3x3 ones of ``BasicBlock`` (conv1, conv2) and ``Bottleneck``
(conv2) of torchvision and timm; the 1x1 convolutions of bottlenecks and the stem stay frozen.
Adapters of grouped 3x3 convolutions (ResNeXt) use the same groups, so both forms can always be
folded back (:func:`~lightning_tl.nn.adapter_merge.merge_adapters`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torchvision.models.resnet as tv_resnet
from torch import Tensor, nn

from lightning_tl.nn.domains import DomainBatchNorm2d, DomainHeads, DomainSpecific

AdapterKind = Literal["series", "parallel"]
_Convs = tuple[tuple[str, str], ...]


class _BlockTable(Mapping[type[nn.Module], _Convs]):
    """Block type -> its (3x3 conv, following BN) attributes, torchvision's and timm's ResNet blocks.

    timm's entries join once timm is imported (a timm model exists only then), so this module does
    not import timm, which would import huggingface_hub.
    """

    def __init__(self) -> None:
        self._table: dict[type[nn.Module], _Convs] = {
            tv_resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
            tv_resnet.Bottleneck: (("conv2", "bn2"),),
        }
        self._has_timm = False

    def _entries(self) -> dict[type[nn.Module], _Convs]:
        if not self._has_timm and "timm.models.resnet" in sys.modules:
            import timm.models.resnet as timm_resnet

            self._table[timm_resnet.BasicBlock] = (("conv1", "bn1"), ("conv2", "bn2"))
            self._table[timm_resnet.Bottleneck] = (("conv2", "bn2"),)
            self._has_timm = True
        return self._table

    def __getitem__(self, key: type[nn.Module]) -> _Convs:
        return self._entries()[key]

    def __iter__(self) -> Iterator[type[nn.Module]]:
        return iter(self._entries())

    def __len__(self) -> int:
        return len(self._entries())


#: Residual block types adapters are injected into, with their (3x3 conv, following BN) attributes.
BLOCKS: Mapping[type[nn.Module], _Convs] = _BlockTable()


def _block_names() -> str:
    return ", ".join(f"{t.__module__}.{t.__name__}" for t in BLOCKS)


class SeriesAdapter(nn.Module):
    """``y = x + W(BN(x))`` on the output of a convolution; W is a zero-initialised 1x1 conv.

    Rebuffi et al. 2017, Eq. 3/4: the residual adapter module ``g(x) = x + alpha * x`` with batch
    normalisation, here placed right after the (frozen) 3x3 convolution.

    Args:
        channels: channels of the convolution's output.
        groups: groups of the 1x1 conv (those of the adapted convolution, so it stays foldable).
    """

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, groups=groups, bias=False)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.conv(self.bn(x))


class ParallelAdapter(nn.Module):
    """The 1x1 conv ``W`` added beside a 3x3 convolution f: the adapted layer computes ``f*x + W*x``.

    Rebuffi et al. 2018, Sec. 3.2: the parallel adapter ``(f + diag_L(alpha))``. W has f's stride and
    groups and no padding, so its output lines up with f's centre tap; it starts at zero.

    Args:
        conv: the convolution it sits beside: odd kernel, "same" padding (padding = dilation * (k // 2)).

    Raises:
        ValueError: a kernel whose centre does not line up with a 1x1 conv of the same stride.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        check_centre_aligned(conv)
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            1,
            stride=conv.stride,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=False,
        )
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W'): the adapter's share, to be added to f's output."""
        return self.conv(x)


def check_centre_aligned(conv: nn.Conv2d) -> None:
    """Raise unless a 1x1 conv with ``conv``'s stride reads exactly the pixels of its centre tap."""
    kernel, padding, dilation = conv.kernel_size, conv.padding, conv.dilation
    same = isinstance(padding, tuple) and all(
        k % 2 == 1 and p == d * (k // 2) for k, p, d in zip(kernel, padding, dilation, strict=True)
    )
    if not same:
        raise ValueError(
            f"a parallel adapter needs an odd kernel with 'same' padding (padding = dilation * (k // 2)) "
            f"so that its 1x1 conv lines up with the centre tap; got kernel {kernel}, padding {padding}, "
            f"dilation {dilation}. Use kind='series' for this network."
        )


class AdaptedConv(DomainSpecific):
    """A frozen convolution with one adapter per domain (series after it, or parallel beside it).

    Args:
        conv: the (pre-trained) convolution; its parameters are frozen.
        kind: ``"series"`` or ``"parallel"``.
        domains: domain names; each gets its own adapter.
    """

    def __init__(self, conv: nn.Conv2d, kind: AdapterKind, domains: Sequence[str]) -> None:
        adapters: dict[str, nn.Module] = {}
        for d in domains:
            if kind == "series":
                adapters[d] = SeriesAdapter(conv.out_channels, conv.groups)
            else:
                adapters[d] = ParallelAdapter(conv)
            adapters[d].to(device=conv.weight.device, dtype=conv.weight.dtype)
        super().__init__(adapters)
        conv.requires_grad_(False)
        self.conv = conv
        self.kind: AdapterKind = kind

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        if self.kind == "series":
            return self.active()(self.conv(x))
        return self.conv(x) + self.active()(x)


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, block)`` of every torchvision/timm BasicBlock or Bottleneck in ``model``.

    Raises:
        ValueError: none found (the block types looked for are named).
    """
    blocks = [(p, m) for p, m in model.named_modules() if type(m) in BLOCKS]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no ResNet residual blocks to put adapters in; looked for "
            f"{_block_names()}. Pass a torchvision or timm ResNet (e.g. create_backbone('resnet18'))."
        )
    return blocks


def inject_adapters(
    model: nn.Module,
    kind: AdapterKind = "parallel",
    domains: Sequence[str] = ("default",),
    num_classes: int | Mapping[str, int] | None = None,
    head: str = "fc",
) -> nn.Module:
    """Turn a ResNet into a multi-domain adapter network, in place; return it.

    Every 3x3 convolution of every residual block gets one adapter per domain, every
    ``BatchNorm2d`` becomes a :class:`DomainBatchNorm2d` (per-domain copies of the pre-trained
    layer), and the classifier ``head`` becomes :class:`DomainHeads`. All other parameters are
    frozen. The first domain is active; switch with :func:`~lightning_tl.nn.domains.set_domain`.
    Freshly injected adapters leave the outputs unchanged.

    Args:
        model: a torchvision or timm ResNet (or a module containing one, e.g. a ``Backbone``).
        kind: ``"series"`` (Rebuffi et al. 2017) or ``"parallel"`` (Rebuffi et al. 2018).
        domains: distinct domain names.
        num_classes: classes per domain (an int for all, or ``{domain: n}``): new heads on the
            features. None: each domain gets a copy of the existing ``Linear`` head, or no head when
            the model has none (``head`` is ``Identity``: a feature extractor).
        head: attribute path of the classifier (``"fc"`` in torchvision and timm ResNets; searched
            below the model, e.g. ``"model.fc"`` in a ``Backbone``).

    Raises:
        ValueError: bad ``kind``, empty/duplicate/non-string domains, a model without ResNet blocks,
            adapters already injected, or ``num_classes`` without a head to replace.
    """
    if kind not in ("series", "parallel"):
        raise ValueError(f"kind must be 'series' or 'parallel', got {kind!r}")
    domains = list(domains)
    if isinstance(domains, str) or not domains or len(set(domains)) != len(domains):
        raise ValueError(f"domains must be a non-empty list of distinct names, got {domains!r}")
    if not all(isinstance(d, str) and d and "." not in d for d in domains):
        raise ValueError(f"domain names must be non-empty strings without '.', got {domains!r}")
    if any(isinstance(m, DomainSpecific) for m in model.modules()):
        raise ValueError("adapters are already injected into this model; inject once with all domains")
    blocks = find_blocks(model)
    classes = _classes_per_domain(num_classes, domains)
    for _, block in blocks:
        for conv_name, _ in BLOCKS[type(block)]:
            conv = getattr(block, conv_name)
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f"{type(block).__name__}.{conv_name} is {type(conv).__name__}, not a Conv2d")
            if kind == "parallel":
                check_centre_aligned(conv)
    model.requires_grad_(False)
    for path, module in list(model.named_modules()):  # before the adapters, which have their own BN
        if type(module) is nn.BatchNorm2d:
            _replace(model, path, DomainBatchNorm2d(module, domains))
    for _, block in blocks:
        for conv_name, _ in BLOCKS[type(block)]:
            setattr(block, conv_name, AdaptedConv(getattr(block, conv_name), kind, domains))
    _inject_heads(model, head, domains, classes)
    return model


def _classes_per_domain(
    num_classes: int | Mapping[str, int] | None, domains: list[str]
) -> dict[str, int] | None:
    if num_classes is None or isinstance(num_classes, int):
        return None if num_classes is None else dict.fromkeys(domains, num_classes)
    if sorted(num_classes) != sorted(domains):
        raise ValueError(f"num_classes names domains {sorted(num_classes)} but domains are {sorted(domains)}")
    return {d: int(num_classes[d]) for d in domains}


def _inject_heads(model: nn.Module, head: str, domains: list[str], classes: dict[str, int] | None) -> None:
    paths = [p for p, _ in model.named_modules() if p == head or p.endswith("." + head)]
    current = model.get_submodule(paths[0]) if paths else None
    if classes is None:
        if isinstance(current, nn.Linear):
            init = {d: current.out_features for d in domains}
            _replace(model, paths[0], DomainHeads(current.in_features, init, init=current))
        return
    if current is None or not isinstance(current, (nn.Linear, nn.Identity)):
        raise ValueError(
            f"num_classes was given but the model has no Linear or Identity classifier named {head!r}; "
            "pass head=<attribute path of the classifier>"
        )
    width = current.in_features if isinstance(current, nn.Linear) else _feature_width(model)
    weight = next(model.parameters())
    _replace(model, paths[0], DomainHeads(width, classes).to(device=weight.device, dtype=weight.dtype))


def _feature_width(model: nn.Module) -> int:
    """Channels of the last normalisation layer: the pooled feature width of a ResNet."""
    norms = [m for m in model.modules() if isinstance(m, DomainBatchNorm2d)]
    bn = norms[-1].active()
    assert isinstance(bn, nn.BatchNorm2d)
    return bn.num_features


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)
