"""``build_policy(spec)``: one string names any augmentation policy, torchvision's or timm's.

torchvision names build torchvision's own v2 classes; timm policy strings build the transforms of
:mod:`~lightning_tl.augment.policy_transforms`, which keep timm's semantics (magnitude noise,
increasing ops, per-op probability) instead of dropping them. Every policy maps a uint8 (C, H, W)
tensor (1 or 3 channels, any size) to one of the same dtype and shape. :func:`parse_policy` returns
the parsed :class:`PolicySpec` (family, ops, parameters) without building anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from torchvision.transforms import v2

from lightning_tl.augment.augment_ops import LEVEL_DENOM, OPS, check_op
from lightning_tl.augment.policy_tables import (
    AUGMIX_OPS,
    AUTOAUGMENT_POLICIES,
    RAND_INCREASING_OPS,
    RAND_OP_SETS,
    RAND_OPS,
)
from lightning_tl.augment.policy_transforms import SubPolicyAugment, TimmAugMix, TimmRandAugment

GRAMMAR = """valid policy specs:
  none
  autoaugment[:imagenet|cifar10|svhn]                       torchvision AutoAugment (default imagenet)
  randaugment[:num_ops=2,magnitude=9,num_magnitude_bins=31]  torchvision RandAugment
  trivialaugment[:num_magnitude_bins=31]                     torchvision TrivialAugmentWide
  augmix[:severity=3,mixture_width=3,chain_depth=-1,alpha=1.0,all_ops=true]   torchvision AugMix
  rand[-m<level>][-n<ops>][-p<prob>][-mstd<std|inf>][-mmax<level>][-inc<0|1>][-t<3a|3aw|weights>]
                                                             timm RandAugment, e.g. rand-m9-mstd0.5-inc1
  augmix-<section>[-<section>...] with m<level> w<width> d<depth> a<alpha> b<0|1> mstd<std>
                                                             timm AugMix, e.g. augmix-m5-w3-d2
  v0|v0r|original|originalr|3a[-mstd<std>]                  timm AutoAugment policies, e.g. original-mstd0.5
  subpolicies:<Op>/<prob>/<level>[+<Op>/<prob>/<level>...][;<sub-policy>...]
                                                             explicit sub-policies (lightning-tl augsearch)
levels are on timm's 0-10 scale"""

_TV_AUTOAUGMENT = {
    "imagenet": v2.AutoAugmentPolicy.IMAGENET,
    "cifar10": v2.AutoAugmentPolicy.CIFAR10,
    "svhn": v2.AutoAugmentPolicy.SVHN,
}
_TV_KEYS: dict[str, dict[str, Any]] = {  # torchvision family -> its keys and defaults
    "randaugment": {"num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31},
    "trivialaugment": {"num_magnitude_bins": 31},
    "augmix": {"severity": 3, "mixture_width": 3, "chain_depth": -1, "alpha": 1.0, "all_ops": True},
}
_TIMM_KEYS = {
    "rand": ("m", "n", "p", "mstd", "mmax", "inc", "t"),
    "augmix": ("m", "w", "d", "a", "b", "mstd"),
    "autoaugment": ("mstd",),
}


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec.

    Attributes:
        spec: the spec string.
        family: ``none``, ``autoaugment``, ``randaugment``, ``trivialaugment`` or ``augmix``.
        source: ``torchvision``, ``timm``, ``subpolicies`` or ``none``.
        ops: the operations the policy may apply, by base name (``Posterize`` for
            ``PosterizeIncreasing``), sorted.
        params: the family's parameters (torchvision's argument names, or timm's meaning spelt out).
        sub_policies: ``(op, probability, level)`` rows of AutoAugment-style policies (level None:
            an op without magnitude); empty for other families.
    """

    spec: str
    family: str
    source: str
    ops: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    sub_policies: tuple[tuple[tuple[str, float, float | None], ...], ...] = ()


def _bad(spec: str, token: str, why: str) -> ValueError:
    return ValueError(f"bad augmentation policy {spec!r}: {why} (token {token!r}).\n{GRAMMAR}")


def _number(spec: str, token: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("0", "1", "true", "false"):
                raise ValueError(text)
            return text.lower() in ("1", "true")
        if kind is float and text.lower() == "inf":
            return math.inf
        return kind(text)
    except ValueError:
        raise _bad(spec, token, f"{text!r} is not a valid {kind.__name__}") from None


def _base_ops(names: Any) -> tuple[str, ...]:
    return tuple(sorted({OPS[n].base for n in names}))


def _with_levels(
    sub_policies: Any, has_level: Any
) -> tuple[tuple[tuple[str, float, float | None], ...], ...]:
    return tuple(
        tuple((OPS[n].base, float(p), float(m) if has_level(n) else None) for n, p, m in sp)
        for sp in sub_policies
    )


def _parse_torchvision(spec: str, family: str, arg: str | None) -> PolicySpec:
    if family == "autoaugment":
        name = arg or "imagenet"
        if name not in _TV_AUTOAUGMENT:
            raise _bad(spec, name, f"torchvision AutoAugment policies are {list(_TV_AUTOAUGMENT)}")
        rows = v2.AutoAugment(_TV_AUTOAUGMENT[name])._policies
        subs = tuple(tuple((n, float(p), None if m is None else float(m)) for n, p, m in sp) for sp in rows)
        ops = tuple(sorted({n for sp in rows for n, _, _ in sp}))
        return PolicySpec(spec, family, "torchvision", ops, {"policy": name}, subs)
    params = dict(_TV_KEYS[family])
    for item in arg.split(",") if arg else []:
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in params:
            raise _bad(spec, item, f"{family} takes key=value pairs with keys {list(params)}")
        key = key.strip()
        params[key] = _number(spec, item, value.strip(), type(_TV_KEYS[family][key]))
    _check_torchvision(spec, family, params)
    cls = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide, "augmix": v2.AugMix}[
        family
    ]
    space = cls._AUGMENTATION_SPACE
    if family == "augmix" and not params["all_ops"]:
        space = v2.AugMix._PARTIAL_AUGMENTATION_SPACE
    return PolicySpec(spec, family, "torchvision", tuple(sorted(space)), params)


def _check_torchvision(spec: str, family: str, p: dict[str, Any]) -> None:
    checks = {
        "num_ops": p.get("num_ops", 0) >= 0,
        "num_magnitude_bins": p.get("num_magnitude_bins", 2) >= 2,
        "magnitude": 0 <= p.get("magnitude", 0) < p.get("num_magnitude_bins", 31),
        "severity": 1 <= p.get("severity", 1) <= 10,
        "mixture_width": p.get("mixture_width", 1) >= 1,
        "chain_depth": p.get("chain_depth", -1) == -1 or p.get("chain_depth", -1) >= 1,
        "alpha": p.get("alpha", 1.0) > 0,
    }
    rules = "num_ops >= 0, num_magnitude_bins >= 2, 0 <= magnitude < num_magnitude_bins, severity in 1..10, "
    rules += "mixture_width >= 1, chain_depth -1 or >= 1, alpha > 0"
    for key, ok in checks.items():
        if not ok:
            raise _bad(spec, f"{key}={p[key]}", f"out of range ({rules})")


def _check_timm(spec: str, p: dict[str, Any]) -> None:
    checks = {
        "m": p["magnitude"] >= 0,
        "n": p.get("num_ops", 0) >= 0,
        "p": 0 <= p.get("prob", 0) <= 1,
        "mstd": p["magnitude_std"] >= 0,
        "mmax": p.get("magnitude_max", 1) > 0,
        "w": p.get("width", 1) >= 1,
        "d": p.get("depth", -1) == -1 or p.get("depth", -1) >= 1,
        "a": p.get("alpha", 1) > 0,
    }
    for key, ok in checks.items():
        if not ok:
            raise _bad(
                spec,
                key,
                "out of range (m >= 0, n >= 0, p in [0, 1], mstd >= 0, mmax > 0, w >= 1, "
                "d -1 or >= 1, a > 0)",
            )


def _timm_sections(spec: str, head: str, sections: list[str], keys: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for section in sections:
        match = re.fullmatch(r"(mstd|mmax|inc|[a-z])(.+)", section)
        if match is None or match.group(1) not in keys:
            raise _bad(spec, section, f"timm {head} sections are {', '.join(k + '<value>' for k in keys)}")
        found[match.group(1)] = match.group(2)
    return found


def _parse_timm(spec: str, head: str, sections: list[str]) -> PolicySpec:
    if head == "rand":
        s = _timm_sections(spec, head, sections, _TIMM_KEYS["rand"])
        mstd = _number(spec, "mstd" + s.get("mstd", ""), s.get("mstd", "0"), float)
        increasing = _number(spec, "inc" + s.get("inc", ""), s.get("inc", "0"), bool)
        ops: tuple[str, ...] = RAND_INCREASING_OPS if increasing else RAND_OPS
        weights = None
        if "t" in s:
            if s["t"] not in RAND_OP_SETS:
                raise _bad(spec, "t" + s["t"], f"timm RandAugment op sets are {list(RAND_OP_SETS)}")
            chosen = RAND_OP_SETS[s["t"]]
            ops = tuple(chosen)
            weights = [float(chosen[n]) for n in ops] if isinstance(chosen, dict) else None
        params = {
            "ops": ops,
            "num_ops": _number(spec, "n" + s.get("n", ""), s.get("n", "2"), int),
            "magnitude": _number(spec, "m" + s.get("m", ""), s.get("m", "10"), float),
            "prob": _number(spec, "p" + s.get("p", ""), s.get("p", "0.5"), float),
            "magnitude_std": math.inf if mstd > 100 else mstd,  # timm: > 100 means uniform
            "magnitude_max": _number(spec, "mmax" + s.get("mmax", ""), s.get("mmax", "10"), float),
            "weights": weights,
        }
        _check_timm(spec, params)
        return PolicySpec(spec, "randaugment", "timm", _base_ops(ops), params)
    if head == "augmix":
        s = _timm_sections(spec, head, sections, _TIMM_KEYS["augmix"])
        params = {
            "ops": AUGMIX_OPS,
            "magnitude": _number(spec, "m" + s.get("m", ""), s.get("m", "3"), float),
            "width": _number(spec, "w" + s.get("w", ""), s.get("w", "3"), int),
            "depth": _number(spec, "d" + s.get("d", ""), s.get("d", "-1"), int),
            "alpha": _number(spec, "a" + s.get("a", ""), s.get("a", "1"), float),
            "blended": _number(spec, "b" + s.get("b", ""), s.get("b", "0"), bool),
            "magnitude_std": _number(spec, "mstd" + s.get("mstd", ""), s.get("mstd", "inf"), float),
        }
        _check_timm(spec, params)
        return PolicySpec(spec, "augmix", "timm", _base_ops(AUGMIX_OPS), params)
    s = _timm_sections(spec, head, sections, _TIMM_KEYS["autoaugment"])
    rows = AUTOAUGMENT_POLICIES[head]
    params = {"policy": head, "magnitude_std": _number(spec, "mstd", s.get("mstd", "0"), float)}
    _check_timm(spec, {"magnitude": 0.0, **params})
    subs = _with_levels(rows, lambda n: OPS[n].level_to_arg is not None)
    return PolicySpec(
        spec, "autoaugment", "timm", _base_ops(n for sp in rows for n, _, _ in sp), params, subs
    )


def _parse_subpolicies(spec: str, body: str) -> PolicySpec:
    rows = []
    for sub in body.split(";"):
        row = []
        for item in sub.split("+"):
            parts = item.split("/")
            if len(parts) != 3:
                raise _bad(spec, item, "each op is <Op>/<probability>/<level>")
            name = parts[0].strip()
            try:
                check_op(name)
            except ValueError as err:
                raise _bad(spec, item, str(err)) from None
            prob, level = _number(spec, item, parts[1], float), _number(spec, item, parts[2], float)
            if not (0 <= prob <= 1 and 0 <= level <= LEVEL_DENOM):
                raise _bad(spec, item, f"probability must be in [0, 1] and level in [0, {LEVEL_DENOM:g}]")
            row.append((name, prob, level))
        rows.append(tuple(row))
    subs = _with_levels(rows, lambda n: OPS[n].level_to_arg is not None)
    ops = _base_ops(n for sp in rows for n, _, _ in sp)
    return PolicySpec(spec, "autoaugment", "subpolicies", ops, {"rows": tuple(rows)}, subs)


def parse_policy(spec: str) -> PolicySpec:
    """Parse a policy spec (see :data:`GRAMMAR`); raises ``ValueError`` naming the bad token."""
    if not isinstance(spec, str):
        raise TypeError(f"policy spec must be a string, got {type(spec).__name__}.\n{GRAMMAR}")
    text = spec.strip()
    head, colon, arg = text.partition(":")
    if text == "none":
        return PolicySpec(text, "none", "none", ())
    if head in ("autoaugment", *_TV_KEYS) and (colon == "" or arg):
        return _parse_torchvision(text, head, arg or None)
    if head == "subpolicies" and arg:
        return _parse_subpolicies(text, arg)
    name, *sections = text.split("-")
    if name in ("rand", "augmix") and (name == "rand" or sections):
        return _parse_timm(text, name, sections)
    if name in AUTOAUGMENT_POLICIES:
        return _parse_timm(text, name, sections)
    raise _bad(text, name if not colon else head, "unknown policy name")


def build_policy(spec: str | PolicySpec) -> v2.Transform:
    """The v2 transform of ``spec``: uint8 (C, H, W) in, same dtype and shape out; labels pass through.

    Example::

        >>> import torch
        >>> policy = build_policy("rand-m9-mstd0.5-inc1")
        >>> policy(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([1, 28, 28])
    """
    parsed = spec if isinstance(spec, PolicySpec) else parse_policy(spec)
    p = parsed.params
    if parsed.family == "none":
        return v2.Identity()
    if parsed.source == "torchvision":
        if parsed.family == "autoaugment":
            return v2.AutoAugment(_TV_AUTOAUGMENT[p["policy"]])
        if parsed.family == "randaugment":
            return v2.RandAugment(p["num_ops"], p["magnitude"], p["num_magnitude_bins"])
        if parsed.family == "trivialaugment":
            return v2.TrivialAugmentWide(p["num_magnitude_bins"])
        return v2.AugMix(p["severity"], p["mixture_width"], p["chain_depth"], p["alpha"], p["all_ops"])
    if parsed.source == "subpolicies":
        return SubPolicyAugment(p["rows"])
    if parsed.family == "randaugment":
        return TimmRandAugment(
            p["ops"],
            p["num_ops"],
            p["magnitude"],
            p["prob"],
            p["magnitude_std"],
            p["magnitude_max"],
            p["weights"],
        )
    if parsed.family == "augmix":
        return TimmAugMix(
            p["ops"], p["magnitude"], p["width"], p["depth"], p["alpha"], p["magnitude_std"], p["blended"]
        )
    return SubPolicyAugment(AUTOAUGMENT_POLICIES[p["policy"]], p["magnitude_std"])
