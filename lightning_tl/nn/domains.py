"""Domain-specific layers: one copy per visual domain, one of them active at a time.

Residual adapters (Rebuffi et al., "Learning multiple visual domains with residual adapters",
NeurIPS 2017) keep a network's convolutions shared and give every domain its own small modules,
its own batch normalisation and its own classifier. Each such layer here holds a ``ModuleDict``
keyed by domain name; :func:`set_domain` switches all of them in a model at once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

from torch import Tensor, nn


class DomainSpecific(nn.Module):
    """Base of layers holding one sub-module per domain in ``self.domain_modules``.

    Attributes:
        domains: the domain names, in injection order.
        domain: the active domain (the first one after construction).
    """

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not modules:
            raise ValueError("a domain-specific layer needs at least one domain")
        self.domain_modules = nn.ModuleDict(dict(modules))
        self.domains: tuple[str, ...] = tuple(modules)
        self.domain = self.domains[0]

    def active(self) -> nn.Module:
        """The active domain's sub-module."""
        return self.domain_modules[self.domain]

    def for_domain(self, domain: str) -> nn.Module:
        """The sub-module of ``domain`` (checked)."""
        check_domain(domain, self.domains)
        return self.domain_modules[domain]


class DomainBatchNorm2d(DomainSpecific):
    """Per-domain copies of a ``BatchNorm2d`` (affine parameters and running statistics).

    Rebuffi et al. (2017, Sec. 3) make batch normalisation domain-specific: statistics of digits and
    of garments differ, and the BN scale/shift are part of each domain's parameters. Every copy
    starts from the given (pre-trained) layer and is trainable.
    """

    def __init__(self, bn: nn.BatchNorm2d, domains: Sequence[str]) -> None:
        copies = {}
        for d in domains:
            c = copy.deepcopy(bn)
            c.requires_grad_(True)
            copies[d] = c
        super().__init__(copies)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), normalised with the active domain's layer."""
        return self.active()(x)


class DomainHeads(DomainSpecific):
    """One linear classifier per domain, each with its own number of classes.

    Args:
        in_features: feature width.
        num_classes: classes of each domain, ``{domain: n}``.
        init: a Linear to copy into every head (its output width must equal each domain's classes);
            None: fresh ``nn.Linear`` layers.
    """

    def __init__(
        self, in_features: int, num_classes: Mapping[str, int], init: nn.Linear | None = None
    ) -> None:
        heads: dict[str, nn.Module] = {}
        for d, n in num_classes.items():
            if n < 1:
                raise ValueError(f"domain {d!r} needs num_classes >= 1, got {n}")
            if init is not None:
                head = copy.deepcopy(init)
                head.requires_grad_(True)
            else:
                head = nn.Linear(in_features, n)
            heads[d] = head
        super().__init__(heads)
        self.in_features = in_features

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_features) -> (B, num_classes of the active domain)."""
        return self.active()(x)


def check_domain(domain: str, domains: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the known domains when ``domain`` is not one of them."""
    if domain not in domains:
        raise ValueError(f"unknown domain {domain!r}; this model was given domains {list(domains)}")


def domain_layers(model: nn.Module) -> Iterator[tuple[str, DomainSpecific]]:
    """``(path, layer)`` of every domain-specific layer in ``model``."""
    for path, module in model.named_modules():
        if isinstance(module, DomainSpecific):
            yield path, module


def model_domains(model: nn.Module) -> tuple[str, ...]:
    """The domains of a model prepared by ``inject_adapters`` (raises if it has none)."""
    for _, layer in domain_layers(model):
        return layer.domains
    raise ValueError(
        f"{type(model).__name__} has no domain-specific layers; call inject_adapters(model, ...) first"
    )


def set_domain(model: nn.Module, domain: str) -> None:
    """Make ``domain`` the active one in every domain-specific layer of ``model``.

    Raises:
        ValueError: the model has no domain-specific layers, or ``domain`` is not one of its domains.
    """
    check_domain(domain, model_domains(model))
    for _, layer in domain_layers(model):
        layer.domain = domain


def get_domain(model: nn.Module) -> str:
    """The active domain of ``model``."""
    model_domains(model)
    return next(layer.domain for _, layer in domain_layers(model))


def domain_parameter_count(model: nn.Module, domain: str, heads: bool = True) -> int:
    """Parameters that belong to ``domain`` alone: its adapters, BatchNorm layers and (``heads``) head."""
    check_domain(domain, model_domains(model))
    return sum(
        p.numel()
        for _, layer in domain_layers(model)
        if heads or not isinstance(layer, DomainHeads)
        for p in layer.for_domain(domain).parameters()
    )
