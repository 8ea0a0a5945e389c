"""Feature extractors from torchvision and timm behind one small interface.

``create_backbone("resnet18")`` builds torchvision's model, ``create_backbone("timm/resnet50")``
timm's. Either way the result maps images (B, C, H, W) to pooled features (B, num_features).
Weights come the way each library's users name them (see :func:`create_backbone`): timm tags with
``pretrained=True`` through timm's loader and Hugging Face cache, torchvision weights names through
torchvision's loader and ``TORCH_HOME`` cache, or a local file, always read without unpickling
arbitrary objects (:mod:`lightning_tl.weights`).
"""

from __future__ import annotations

import difflib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from lightning_tl.weights import (
    DataConfig,
    hf_cache_dir,
    hf_cache_miss,
    hub_offline,
    is_cache_miss,
    load_torchvision_weights,
    read_state_dict,
    refuse_pickle,
    torch_hub_checkpoints,
    torchvision_build_kwargs,
    torchvision_data_config,
    torchvision_weights,
    url_cache_miss,
)

TIMM_PREFIX = "timm/"
# Prefixes under which a backbone's weights sit in checkpoints of ours and of common trainers.
_KEY_PREFIXES = ("", "backbone.model.", "backbone.", "model.", "encoder.", "module.", "module.model.")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pth.tar", ".tar")


class Backbone(nn.Module):
    """A classifier-less network: images (B, C, H, W) -> features (B, num_features).

    Attributes:
        model: the wrapped torchvision or timm network (its classifier replaced by ``Identity``).
        num_features: width of the returned feature vector.
        name: the name it was created from.
        data_config: mean, std and input size of its hub weights; None for random or local-file weights.
    """

    def __init__(
        self, model: nn.Module, num_features: int, name: str, data_config: DataConfig | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.num_features = num_features
        self.name = name
        self.data_config = data_config

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_features)."""
        return self.model(x)


def list_backbones(pretrained: bool = False) -> list[str]:
    """Every name ``create_backbone`` accepts: torchvision names and ``timm/<name>``.

    With ``pretrained=True``: the names that have hub weights, i.e. torchvision models with weights
    and every tagged timm name (``timm/resnet50.a1_in1k``).
    """
    import timm

    tv = sorted(torchvision.models.list_models())
    if not pretrained:
        return tv + [TIMM_PREFIX + n for n in timm.list_models()]
    with_weights = [n for n in tv if _has_torchvision_weights(n)]
    return with_weights + [TIMM_PREFIX + n for n in timm.list_pretrained()]


def _has_torchvision_weights(name: str) -> bool:
    try:
        return len(torchvision.models.get_model_weights(name).__members__) > 1
    except (ValueError, KeyError):
        return False


def create_backbone(
    name: str,
    pretrained: bool | str | None = None,
    small_input: bool | None = None,
    in_chans: int = 3,
    model_kwargs: dict[str, Any] | None = None,
) -> Backbone:
    """Build a feature extractor by name, random or with pretrained weights.

    Args:
        name: a torchvision model name (``"resnet18"``) or ``"timm/<timm name>[.<tag>]"``
            (``"timm/resnet50"``, ``"timm/resnet50.a1_in1k"``).
        pretrained: None / False: random initialisation. True: the hub weights of ``name`` through
            its library's loader and cache (timm: the tag in the name, else timm's default tag, from
            the Hugging Face hub; torchvision: the ``DEFAULT`` weights). A torchvision weights name
            (``"IMAGENET1K_V2"`` or ``"ResNet50_Weights.IMAGENET1K_V2"``). Or the path of a local
            file: a ``.safetensors`` file, or a ``torch.save`` state dict / timm or torchvision
            checkpoint / Lightning checkpoint of ours, read with ``torch.load(weights_only=True)``
            (a file that needs pickle is refused). Classifier weights in the file are dropped.
        small_input: adapt a ResNet-style stem to 28-32 px images, as in the SimCLR paper's CIFAR-10
            experiments (Chen et al. 2020, Appendix B.9): the 7x7 stride-2 first convolution becomes
            3x3 stride 1 and the first max-pool is removed. None: what the weights need (False for
            hub weights and random init; a local file's own stem: True for a 3x3 ``conv1``). True
            with hub weights is refused: it would replace their trained stem with a random one.
        in_chans: input channels (1 for grayscale). Pretrained RGB first-layer weights are summed over
            channels for 1-channel input, as timm's ``adapt_input_conv`` does.
        model_kwargs: extra constructor arguments of the model, e.g. ``{"channels": [32, 64, 128, 256]}``
            for a half-width ``timm/resnet18`` (a quarter of the compute, for small data on CPUs).

    Raises:
        ValueError: unknown name or tag (close matches are listed), an unknown torchvision weights name
            (the model's are listed), bad ``in_chans``, ``small_input`` on a model without a
            ResNet-style stem or with hub weights, or a weight file that does not fit or needs pickle.
        FileNotFoundError: ``pretrained`` looks like a path but is not an existing file.
        WeightsNotCachedError: hub weights are not cached and cannot be downloaded (offline / no
            network); the message names the cache folder and how to fill it.
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}.")
    kwargs = dict(model_kwargs or {})
    reserved = {"pretrained", "num_classes", "in_chans", "weights"} & kwargs.keys()
    if reserved:
        raise ValueError(
            f"model_kwargs may not set {sorted(reserved)}: create_backbone sets them itself; use its "
            "own arguments (pretrained=..., in_chans=...) instead"
        )
    if pretrained is False:
        pretrained = None
    is_timm = name.startswith(TIMM_PREFIX)
    if is_timm:
        _check_timm_name(name, hub=pretrained is True)
    elif name not in torchvision.models.list_models():
        _unknown(name)
    source: Mapping[str, Tensor] | None = None
    if isinstance(pretrained, str):
        if Path(pretrained).is_file():
            source = read_state_dict(pretrained)
            if small_input is None:
                small_input = _has_small_stem(source)
        elif is_timm or _looks_like_path(pretrained):
            raise FileNotFoundError(
                f"pretrained={pretrained!r} is not a file. Pass a local weight file (.safetensors, or a "
                "state dict / timm / torchvision checkpoint / Lightning .ckpt), pretrained=True for hub "
                "weights (timm: put the tag in the name, e.g. 'timm/resnet50.a1_in1k'), or a torchvision "
                "weights name (e.g. 'IMAGENET1K_V1')."
            )
    hub = pretrained is not None and source is None
    if hub and small_input:
        raise ValueError(
            f"small_input=True replaces the 7x7 stem of {name!r}'s hub weights with a random 3x3 one, "
            "which throws away the trained first layer. Feed images at the weights' input size "
            "(data image_size: 224) with small_input: false, or pass a local weight file trained with "
            "a small-input stem."
        )
    if is_timm:
        backbone = _create_timm(name, hub, in_chans, kwargs)
        head_keys = _timm_classifier_keys(backbone.model)
    else:
        backbone, head_keys = _create_torchvision(name, pretrained if hub else None, in_chans, kwargs)
    if small_input:
        _small_stem(backbone.model, name)
    if source is not None:
        load_backbone_weights(backbone.model, source, ignore=head_keys, origin=str(pretrained))
    return backbone


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.lower().endswith(_WEIGHT_SUFFIXES)


def _check_timm_name(name: str, hub: bool) -> None:
    """Raise for an unknown timm architecture or tag, or for ``pretrained=True`` without weights."""
    import timm

    timm_name = name[len(TIMM_PREFIX) :]
    arch, _, tag = timm_name.partition(".")
    if arch not in timm.list_models():
        _unknown(name)
    tagged = timm.list_pretrained(f"{arch}.*")
    if tag and timm_name not in tagged:
        close = difflib.get_close_matches(timm_name, tagged, n=5, cutoff=0.0)
        hint = f" Its tags: {', '.join(TIMM_PREFIX + c for c in close)}." if close else " It has none."
        raise ValueError(
            f"timm has no pretrained tag {timm_name!r}.{hint} timm.list_pretrained() (and "
            "lightning_tl.backbones.list_backbones(pretrained=True)) list them all."
        )
    if hub and not tagged:
        raise ValueError(f"timm model {name!r} has no pretrained weights; use pretrained=None (random).")


def _create_timm(name: str, hub: bool, in_chans: int, kwargs: dict[str, Any]) -> Backbone:
    import timm

    timm_name = name[len(TIMM_PREFIX) :]
    if not hub:
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        return Backbone(model, int(model.num_features), name)  # type: ignore[arg-type]
    cfg: Any = timm.models.get_pretrained_cfg(timm_name)
    what = f"timm weights {TIMM_PREFIX}{timm_name}"
    url = getattr(cfg, "url", None)
    cached = bool(url) and os.path.isfile(os.path.join(torch_hub_checkpoints(), os.path.basename(str(url))))
    if not getattr(cfg, "hf_hub_id", None) and url and hub_offline() and not cached:
        raise url_cache_miss(what, url, None)  # timm would download it with torch.hub, offline or not
    try:
        model = timm.create_model(timm_name, pretrained=True, num_classes=0, in_chans=in_chans, **kwargs)
    except Exception as err:
        cause = err if is_cache_miss(err) else err.__cause__ or err.__context__
        if isinstance(err, pickle.UnpicklingError) or isinstance(cause, pickle.UnpicklingError):
            # timm reads a cached .bin with weights_only=True, and refuses pickled objects
            raise refuse_pickle(f"{what} in {hf_cache_dir()!r}", cause or err) from err
        if cause is None or not is_cache_miss(cause):
            raise
        if getattr(cfg, "hf_hub_id", None):
            raise hf_cache_miss(what, cfg.hf_hub_id, cause) from err
        raise url_cache_miss(what, str(url), cause) from err
    data = _timm_data_config(model, TIMM_PREFIX + timm_name)
    return Backbone(model, int(model.num_features), name, data)  # type: ignore[arg-type]


def _timm_data_config(model: nn.Module, source: str) -> DataConfig | None:
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    mean, std, size = cfg.get("mean"), cfg.get("std"), cfg.get("input_size")
    if mean is None or std is None or not size:
        return None
    return DataConfig(tuple(map(float, mean)), tuple(map(float, std)), (int(size[-2]), int(size[-1])), source)


def _timm_classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier(s) timm's ``pretrained_cfg["classifier"]`` names."""
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def _create_torchvision(
    name: str, pretrained: bool | str | None, in_chans: int, kwargs: dict[str, Any]
) -> tuple[Backbone, set[str]]:
    if pretrained is None:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        num_features, head_keys = _strip_classifier(model, name)
        _set_in_chans(model, in_chans)
        return Backbone(model, num_features, name), head_keys
    weights = torchvision_weights(name, pretrained)
    state = load_torchvision_weights(name, weights)
    model = torchvision.models.get_model(
        name, weights=None, **{**torchvision_build_kwargs(name, weights), **kwargs}
    )
    num_features, head_keys = _strip_classifier(model, name)
    _set_in_chans(model, in_chans)
    load_backbone_weights(model, state, ignore=head_keys, origin=f"torchvision {weights}")
    return Backbone(model, num_features, name, torchvision_data_config(weights)), head_keys


def _has_small_stem(state: Mapping[str, Tensor]) -> bool:
    """Whether the ResNet ``conv1`` in ``state`` (under any known prefix) is a 3x3 convolution."""
    for prefix in _KEY_PREFIXES:
        weight = state.get(f"{prefix}conv1.weight")
        if weight is not None and weight.ndim == 4:
            return tuple(weight.shape[2:]) == (3, 3)
    return False


def _unknown(name: str) -> None:
    close = difflib.get_close_matches(name, list_backbones(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} Use a torchvision name (e.g. 'resnet18') or 'timm/<name>' "
        "(e.g. 'timm/resnet50'); lightning_tl.backbones.list_backbones() lists them all."
    )


def _strip_classifier(model: nn.Module, name: str) -> tuple[int, set[str]]:
    """Replace the last Linear layer (the classifier) with Identity; return its input width and keys."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {name!r} has no Linear classifier to remove; use 'timm/<name>'.")
    path, last = linears[-1]
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return last.in_features, {f"{path}.weight", f"{path}.bias"}


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return path, module
    raise ValueError("the model has no Conv2d layer to adapt")


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def _set_in_chans(model: nn.Module, in_chans: int) -> None:
    path, conv = _first_conv(model)
    if conv.in_channels == in_chans:
        return
    _replace(
        model,
        path,
        nn.Conv2d(
            in_chans,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            conv.groups,
            conv.bias is not None,
        ),
    )


def _small_stem(model: nn.Module, name: str) -> None:
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(
            f"small_input=True adapts ResNet-style stems (conv1 + maxpool); {name!r} has none. "
            "Use a ResNet (e.g. 'resnet18', 'timm/resnet26') or feed larger images."
        )
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()


def load_backbone_weights(
    model: nn.Module,
    weights: str | Mapping[str, Tensor],
    ignore: set[str] = frozenset(),  # type: ignore[assignment]
    origin: str | None = None,
) -> None:
    """Load ``weights`` (a state dict, or the path of a file :func:`~lightning_tl.weights.read_state_dict`
    reads safely) into ``model`` strictly, finding the key prefix they sit under.

    The prefix (``""``, ``"backbone.model."``, ``"model."``, ...) whose stripped keys cover most of
    ``model``'s is used; keys outside that prefix (e.g. a projection head) are not for the backbone.
    Keys in ``ignore`` (the removed classifier) are dropped. A 3-channel first convolution loaded into
    a 1-channel one is summed over channels (and a 1-channel one repeated and scaled for 3 channels).

    Raises:
        ValueError: missing keys, unexpected backbone keys, shapes that do not fit, or a file that
            needs pickle.
    """
    if isinstance(weights, str):
        origin = origin or weights
        source: Mapping[str, Tensor] = read_state_dict(weights)
    else:
        source = weights
    where = repr(origin) if origin else "the state dict"
    target = model.state_dict()
    best = max(_KEY_PREFIXES, key=lambda p: sum(k[len(p) :] in target for k in source if k.startswith(p)))
    stripped = {k[len(best) :]: v for k, v in source.items() if k.startswith(best)}
    stripped = {k: v for k, v in stripped.items() if k not in ignore}
    missing = sorted(set(target) - set(stripped))
    unexpected = sorted(set(stripped) - set(target))
    if missing or unexpected:
        raise ValueError(
            f"weights in {where} (prefix {best!r}) do not fit this backbone: "
            f"missing {_head(missing)}, unexpected {_head(unexpected)}. "
            "Check the backbone name, small_input and in_chans match the checkpoint."
        )
    first, _ = _first_conv(model)
    for key, value in stripped.items():
        want = target[key].shape
        if value.shape == want:
            continue
        if key == f"{first}.weight" and value.shape[0] == want[0] and value.shape[2:] == want[2:]:
            if want[1] == 1:
                stripped[key] = value.sum(dim=1, keepdim=True)
                continue
            if value.shape[1] == 1:
                stripped[key] = value.repeat(1, want[1], 1, 1) / want[1]
                continue
        raise ValueError(
            f"weight {key!r} in {where} has shape {tuple(value.shape)} but the backbone expects "
            f"{tuple(want)}. Check small_input (3x3 vs 7x7 stem) and in_chans."
        )
    with torch.no_grad():
        model.load_state_dict(stripped, strict=True)


def _head(keys: list[str], n: int = 5) -> str:
    return str(keys[:n])[:-1] + (", ...]" if len(keys) > n else "]")
