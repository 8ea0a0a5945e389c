"""Ordered layer groups of a model, from input to output, for freezing and layer-wise learning rates.

A group is a name and a list of glob patterns (``fnmatch``, ``*`` also matches dots) over the
model's parameter and buffer names; a name belongs to the first group with a matching pattern.
:func:`discover_groups` finds them on a module with a ``backbone`` attribute: timm's
``group_matcher`` (stem, then each stage/block), torchvision ResNet stages (stem, layer1..layer4),
or the children of an ``nn.Sequential``; everything outside the backbone is the head, the last group.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torchvision
from torch import nn

from lightning_tl.backbones import Backbone

HEAD = "head"


@dataclass(frozen=True)
class LayerGroup:
    """A named set of parameters/buffers: every name matching one of ``patterns`` (first group wins)."""

    name: str
    patterns: tuple[str, ...]

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


def groups_from_patterns(patterns: Sequence[str | Sequence[str]]) -> list[LayerGroup]:
    """User patterns, input to output (head last): each a glob or a list of globs, named after it."""
    groups = []
    for entry in patterns:
        globs = (entry,) if isinstance(entry, str) else tuple(entry)
        if not globs or not all(isinstance(g, str) and g for g in globs):
            raise ValueError(f"each group must be a glob or a non-empty list of globs, got {entry!r}.")
        groups.append(LayerGroup(" | ".join(globs), globs))
    return groups


def discover_groups(module: nn.Module) -> list[LayerGroup]:
    """Groups of ``module.backbone`` (input to output) plus the head: every parameter outside the backbone.

    Raises:
        ValueError: no ``backbone`` attribute, a backbone whose groups cannot be found, or no head
            parameters; the message says which ``groups=[...]`` patterns to pass instead.
    """
    backbone = getattr(module, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"{type(module).__name__} has no `backbone` module attribute, so its layer groups cannot be "
            "found automatically. Pass groups=[...] name patterns from input to output with the head "
            "last, e.g. groups=['encoder.stem.*', 'encoder.block1.*', 'encoder.block2.*', '*']."
        )
    prefix = "backbone."
    inner = backbone
    if isinstance(backbone, Backbone):  # our wrapper: the network sits in .model
        inner, prefix = backbone.model, "backbone.model."
    stages = backbone_stages(inner)
    if stages is None:
        raise ValueError(
            f"cannot split the backbone ({type(inner).__name__}) into layer groups: it is not a timm model "
            "with group_matcher, a torchvision ResNet or an nn.Sequential. Pass groups=[...] name "
            f"patterns from input to output with the head last, e.g. groups=['{prefix}<first block>.*', "
            f"..., '{prefix}*', '*']."
        )
    groups = [LayerGroup(prefix + name, tuple(prefix + p for p in pats)) for name, pats in stages]
    head = [n for n, _ in module.named_parameters() if not n.startswith("backbone.")]
    if not head:
        raise ValueError(
            f"{type(module).__name__} has no parameters outside `backbone`, so there is no head to train. "
            "Add a head module, or pass groups=[...] patterns whose last entry is the head."
        )
    return [*groups, LayerGroup(HEAD, ("*",))]


def backbone_stages(model: nn.Module) -> list[tuple[str, list[str]]] | None:
    """The stages of a bare network, input to output, as ``(group name, glob patterns)``; None if unknown.

    Patterns are relative to ``model`` (prefix them to use them on a module that holds it). Known
    networks: a torchvision ResNet (``stem`` = conv1 + bn1, then ``layer1`` .. ``layer4``), a timm model
    with ``group_matcher`` (its coarse groups, ``group0`` .. ``groupN``: stem, then stages or blocks), or
    an ``nn.Sequential`` (each child with parameters or buffers, named by its index). Used by
    :func:`discover_groups` and by CLIP's image tower for partial unlocking.

    Example::

        >>> from torch import nn
        >>> backbone_stages(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2)))
        [('0', ['0.*']), ('2', ['2.*'])]
    """
    if isinstance(model, torchvision.models.ResNet):
        stem = ["conv1.*", "bn1.*"]
        return [("stem", stem)] + [(f"layer{i}", [f"layer{i}.*"]) for i in range(1, 5)]
    matcher = getattr(model, "group_matcher", None)
    if callable(matcher):  # timm models
        from timm.models import group_parameters

        by_group = group_parameters(model, matcher(coarse=True))
        out = []
        for gid, names in sorted(by_group.items()):
            modules = dict.fromkeys(n.rpartition(".")[0] for n in names)  # ordered, unique
            pats = [f"{m}.*" for m in modules if m] + [n for n in names if "." not in n]
            out.append((f"group{gid}", pats))
        return out
    if isinstance(model, nn.Sequential):
        return [(name, [f"{name}.*"]) for name, child in model.named_children() if _has_state(child)]
    return None


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def assign(names: Sequence[str], groups: Sequence[LayerGroup]) -> list[list[str]]:
    """Names per group (first matching group wins), in ``names`` order.

    Raises:
        ValueError: a group that matches no name (after earlier groups took theirs), or names
            matched by no group (add ``'*'`` as the last pattern to put them in the head).
    """
    out: list[list[str]] = [[] for _ in groups]
    unmatched = []
    for name in names:
        for i, group in enumerate(groups):
            if group.matches(name):
                out[i].append(name)
                break
        else:
            unmatched.append(name)
    for group, members in zip(groups, out, strict=True):
        if not members:
            raise ValueError(
                f"layer group {group.name!r} matches no parameter (or only ones an earlier group took). "
                f"Parameter names look like {list(names)[:4]}; fix the pattern."
            )
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} parameters are in no layer group, e.g. {unmatched[:4]}. Add patterns for "
            "them, or end the list with '*' to put the rest in the head."
        )
    return out


def group_index(name: str, groups: Sequence[LayerGroup]) -> int | None:
    """Index of the first group matching ``name`` (a parameter, buffer or module state name)."""
    for i, group in enumerate(groups):
        if group.matches(name):
            return i
    return None
