"""Feature extractors from torchvision and timm behind one small interface.

``create_backbone("resnet18")`` builds torchvision's model, ``create_backbone("timm/resnet50")``
timm's. Either way the result maps images (B, C, H, W) to pooled features (B, num_features).
Weights come only from local files: a plain state dict, a timm/torchvision checkpoint, or a
Lightning checkpoint of one of our modules (the backbone's weights are found by key prefix).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from torch import Tensor, nn

TIMM_PREFIX = "timm/"
# Prefixes under which a backbone's weights sit in checkpoints of ours and of common trainers.
_KEY_PREFIXES = ("", "backbone.model.", "backbone.", "model.", "encoder.", "module.", "module.model.")


class Backbone(nn.Module):
    """A classifier-less network: images (B, C, H, W) -> features (B, num_features).

    Attributes:
        model: the wrapped torchvision or timm network (its classifier replaced by ``Identity``).
        num_features: width of the returned feature vector.
        name: the name it was created from.
    """

    def __init__(self, model: nn.Module, num_features: int, name: str) -> None:
        super().__init__()
        self.model = model
        self.num_features = num_features
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, num_features)."""
        return self.model(x)


def list_backbones() -> list[str]:
    """Every name ``create_backbone`` accepts: torchvision names and ``timm/<name>``."""
    return sorted(torchvision.models.list_models()) + [TIMM_PREFIX + n for n in timm.list_models()]


def create_backbone(
    name: str,
    pretrained: str | None = None,
    small_input: bool = False,
    in_chans: int = 3,
    model_kwargs: dict[str, Any] | None = None,
) -> Backbone:
    """Build a feature extractor by name.

    Args:
        name: a torchvision model name (``"resnet18"``) or ``"timm/<timm name>"`` (``"timm/resnet50"``).
        pretrained: path of a local weight file (state dict, timm/torchvision checkpoint or Lightning
            checkpoint). Nothing is ever downloaded.
        small_input: adapt a ResNet-style stem to 28-32 px images, as in the SimCLR paper's CIFAR-10
            experiments (Chen et al. 2020, Appendix B.9): the 7x7 stride-2 first convolution becomes
            3x3 stride 1 and the first max-pool is removed.
        in_chans: input channels (1 for grayscale). Pretrained RGB first-layer weights are summed over
            channels for 1-channel input, as timm's ``adapt_input_conv`` does.
        model_kwargs: extra constructor arguments of the model, e.g. ``{"channels": [32, 64, 128, 256]}``
            for a half-width ``timm/resnet18`` (a quarter of the compute, for small data on CPUs).

    Raises:
        ValueError: unknown name (close matches are listed), bad ``in_chans``, ``small_input`` on a
            model without a ResNet-style stem, or a weight file that does not fit.
        FileNotFoundError: ``pretrained`` is not an existing file.
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}.")
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"pretrained={pretrained!r} is not a file. Weights load only from local files "
            "(a state dict, a timm/torchvision checkpoint or a Lightning .ckpt); nothing is downloaded."
        )
    kwargs = dict(model_kwargs or {})
    reserved = {"pretrained", "num_classes", "in_chans", "weights"} & kwargs.keys()
    if reserved:
        raise ValueError(
            f"model_kwargs may not set {sorted(reserved)}: create_backbone sets them itself; use its "
            "own arguments (pretrained=<file>, in_chans=...) instead"
        )
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX) :]
        if timm_name not in timm.list_models():
            _unknown(name)
        model = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        num_features = int(model.num_features)  # type: ignore[arg-type]
        head_keys: set[str] = set()
    else:
        if name not in torchvision.models.list_models():
            _unknown(name)
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        num_features, head_keys = _strip_classifier(model, name)
        _set_in_chans(model, in_chans)
    if small_input:
        _small_stem(model, name)
    if pretrained is not None:
        load_backbone_weights(model, pretrained, ignore=head_keys)
    return Backbone(model, num_features, name)


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


def _read_state_dict(path: str) -> dict[str, Tensor]:
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a Lightning checkpoint may hold pickled hyper-parameters
        obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} holds no state dict (a mapping of names to tensors).")
    return obj


def load_backbone_weights(model: nn.Module, path: str, ignore: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Load the weights in ``path`` into ``model`` strictly, finding the key prefix they sit under.

    The prefix (``""``, ``"backbone.model."``, ``"model."``, ...) whose stripped keys cover most of
    ``model``'s is used; keys outside that prefix (e.g. a projection head) are not for the backbone.
    Keys in ``ignore`` (the removed classifier) are dropped. A 3-channel first convolution loaded into
    a 1-channel one is summed over channels (and a 1-channel one repeated and scaled for 3 channels).

    Raises:
        ValueError: missing keys, unexpected backbone keys, or shapes that do not fit.
    """
    source = _read_state_dict(path)
    target = model.state_dict()
    best = max(_KEY_PREFIXES, key=lambda p: sum(k[len(p) :] in target for k in source if k.startswith(p)))
    stripped = {k[len(best) :]: v for k, v in source.items() if k.startswith(best)}
    stripped = {k: v for k, v in stripped.items() if k not in ignore}
    missing = sorted(set(target) - set(stripped))
    unexpected = sorted(set(stripped) - set(target))
    if missing or unexpected:
        raise ValueError(
            f"weights in {path!r} (prefix {best!r}) do not fit this backbone: "
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
            f"weight {key!r} in {path!r} has shape {tuple(value.shape)} but the backbone expects "
            f"{tuple(want)}. Check small_input (3x3 vs 7x7 stem) and in_chans."
        )
    model.load_state_dict(stripped, strict=True)


def _head(keys: list[str], n: int = 5) -> str:
    return str(keys[:n])[:-1] + (", ...]" if len(keys) > n else "]")
