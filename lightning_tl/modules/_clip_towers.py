"""The two towers of CLIP: open_clip's by name, or a ``create_backbone`` image tower + open_clip's text tower.

Both kinds expose open_clip's interface: ``visual`` (image tower), ``encode_image(x) -> (B, E)``,
``encode_text(tokens) -> (B, E)``, ``logit_scale`` (a learnable log-scale parameter) and
``context_length``; :func:`lock_image_tower` / :func:`lock_text_tower` freeze them as LiT does.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_tl.backbones import Backbone, create_backbone
from lightning_tl.layer_groups import LayerGroup, assign, backbone_stages
from lightning_tl.tokenizers import HF_HUB, open_clip_config
from lightning_tl.weights import WeightsNotCachedError, hf_cache_miss, load_file

#: CLIP's initial temperature 0.07 (Radford et al. 2021, Sec. 2.5), stored as log(1 / 0.07).
INIT_LOGIT_SCALE = math.log(1 / 0.07)


class BackboneImageTower(nn.Module):
    """``create_backbone`` features (B, F) -> linear projection -> image embeddings (B, E)."""

    def __init__(self, backbone: Backbone, embed_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(backbone.num_features, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=backbone.num_features**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.backbone(x))  # (B, E)

    def groups(self) -> list[list[nn.Parameter]]:
        """Parameters from input to output: the backbone's stages (stem, blocks), then the projection."""
        stages = backbone_stages(self.backbone.model)
        if stages is None:
            raise ValueError(
                f"cannot find the blocks of backbone {self.backbone.name!r} for partial unlocking; use a "
                "torchvision ResNet or a timm model, or unlocked_image_groups: 0"
            )
        named = dict(self.backbone.model.named_parameters())
        groups = [LayerGroup(name, tuple(patterns)) for name, patterns in stages]
        members = assign(list(named), groups)
        out = [[named[n] for n in names] for names in members if names]
        return [*out, [self.proj.weight]]  # type: ignore[list-item]

    def lock(self, unlocked_groups: int = 0) -> None:
        """Freeze every parameter except those of the last ``unlocked_groups`` groups."""
        for p in self.parameters():
            p.requires_grad_(False)
        groups = self.groups() if unlocked_groups else []
        for group in groups[len(groups) - unlocked_groups :]:
            for p in group:
                p.requires_grad_(True)


class BackboneTextCLIP(nn.Module):
    """A small CLIP: a ``create_backbone`` image tower and open_clip's ``TextTransformer``.

    The text tower is CLIP's (Radford et al. 2021, Sec. 2.4): a causal transformer over BPE tokens
    whose end-of-text token's features are projected to the joint space.
    """

    def __init__(self, visual: BackboneImageTower, text: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.text = text  # open_clip TextTransformer: tokens (B, L) -> (B, E)
        self.context_length = int(text.context_length)  # type: ignore[arg-type]
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    def encode_image(self, image: Tensor) -> Tensor:
        return self.visual(image)  # (B, E)

    def encode_text(self, text: Tensor) -> Tensor:
        return self.text(text)  # (B, E)


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text or "/" in text or Path(text).suffix.lower() in {".pt", ".pth", ".bin", ".safetensors"}
    )


def _hub_miss(model_name: str, what: str, hf_hub: str, err: BaseException) -> WeightsNotCachedError:
    repo = hf_hub.rstrip("/")  # open_clip's 'org/name/' or 'org/name/file'
    if repo.count("/") > 1:
        repo = repo.rsplit("/", 1)[0]
    cause = err.__context__ if isinstance(err, FileNotFoundError) and err.__context__ is not None else err
    return hf_cache_miss(f"open_clip {what} of {model_name!r}", repo, cause)


def create_open_clip(model_name: str, pretrained: bool | str | None) -> nn.Module:
    """An open_clip model by name, random or with weights, through open_clip's own loader and cache.

    Args:
        model_name: an ``open_clip.list_models()`` name or ``hf-hub:org/name`` (whose config and
            weights come from that Hugging Face repo).
        pretrained: None / False: random (an ``hf-hub:`` model always loads its repo's weights).
            True: only for ``hf-hub:`` models. An open_clip tag of the model (``"openai"``,
            ``"laion2b_s34b_b79k"``; ``open_clip.list_pretrained_tags_by_model(name)``), downloaded
            into / read from the Hugging Face cache. Or a local checkpoint file open_clip reads: a state
            dict or open_clip's training checkpoint ``{"state_dict": ..., "epoch": ...}``.

    Every file is first read with ``torch.load(weights_only=True)`` (or safetensors): a file that needs
    pickle is refused before open_clip opens it.
    """
    import open_clip
    from open_clip.pretrained import download_pretrained, download_pretrained_from_hf, get_pretrained_cfg

    hf_text = str(open_clip_config(model_name).get("text_cfg", {}).get("hf_model_name") or "")

    def build(**kwargs: Any) -> nn.Module:
        try:
            return open_clip.create_model(model_name, **kwargs)
        except OSError as err:  # transformers' files of a Hugging Face text tower: not cached, offline
            if not hf_text or isinstance(err, WeightsNotCachedError):
                raise
            raise _hub_miss(model_name, "Hugging Face text tower", hf_text, err) from err

    if pretrained is False:
        pretrained = None
    if model_name.startswith(HF_HUB):
        if pretrained not in (None, True):
            raise ValueError(
                f"{model_name!r} loads the weights of its Hugging Face repo; drop pretrained={pretrained!r}"
            )
        repo = model_name[len(HF_HUB) :]
        try:
            path = download_pretrained_from_hf(repo)
        except (FileNotFoundError, OSError) as err:
            raise _hub_miss(model_name, "weights", repo, err) from err
        load_file(path, mmap=True)  # refuses pickled objects before open_clip reads the file
        return build()
    if pretrained is None:  # open_clip's random init (a Hugging Face text tower starts from its LM)
        return build(pretrained=None)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained is True:
        raise ValueError(
            f"pretrained=True needs a tag for open_clip model {model_name!r}: one of {tags} "
            "(open_clip.list_pretrained_tags_by_model), or a local checkpoint file"
        )
    if pretrained in tags:
        cfg = get_pretrained_cfg(model_name, pretrained)
        try:
            path = download_pretrained(cfg)
        except (FileNotFoundError, OSError) as err:
            raise _hub_miss(model_name, f"weights {pretrained!r}", str(cfg.get("hf_hub", "")), err) from err
        load_file(path, mmap=True)
        return build(pretrained=pretrained)
    if not Path(pretrained).is_file():
        if _looks_like_path(pretrained):
            raise FileNotFoundError(
                f"pretrained={pretrained!r} is not a file: pass a local open_clip checkpoint (.pt/.bin/"
                f".safetensors) or one of {model_name!r}'s tags {tags}"
            )
        close = difflib.get_close_matches(pretrained, tags, n=5, cutoff=0.0)
        raise ValueError(
            f"{pretrained!r} is neither a file nor a pretrained tag of open_clip model {model_name!r}; "
            f"its tags are {tags or 'none'}" + (f" (closest: {close})" if close else "")
        )
    load_file(pretrained, mmap=True)
    try:
        return build(pretrained=pretrained)  # open_clip's load_checkpoint, weights_only=True
    except RuntimeError as err:
        raise ValueError(
            f"{pretrained!r} does not fit open_clip model {model_name!r}: {str(err)[:500]}"
        ) from err


def create_backbone_clip(
    image_backbone: str,
    image_pretrained: bool | str | None,
    small_input: bool | None,
    in_channels: int,
    backbone_kwargs: dict[str, Any] | None,
    embed_dim: int,
    context_length: int,
    vocab_size: int,
    text_width: int,
    text_layers: int,
    text_heads: int,
) -> BackboneTextCLIP:
    """A :class:`BackboneTextCLIP` from its sizes (checked here, before anything is built): the
    ``create_backbone`` image tower with a projection to ``embed_dim``, and open_clip's
    ``TextTransformer`` over ``vocab_size`` tokens."""
    from open_clip.transformer import TextTransformer

    for name, value in (
        ("embed_dim", embed_dim),
        ("context_length", context_length),
        ("text_width", text_width),
        ("text_layers", text_layers),
        ("text_heads", text_heads),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if text_width % text_heads:
        raise ValueError(f"text_width={text_width} must be divisible by text_heads={text_heads}")
    backbone = create_backbone(
        image_backbone,
        image_pretrained,
        small_input=small_input,
        in_chans=in_channels,
        model_kwargs=backbone_kwargs,
    )
    visual = BackboneImageTower(backbone, embed_dim)
    text = TextTransformer(
        context_length=context_length,
        vocab_size=vocab_size,
        width=text_width,
        heads=text_heads,
        layers=text_layers,
        output_dim=embed_dim,
    )
    return BackboneTextCLIP(visual, text)


def lock_image_tower(model: nn.Module, unlocked_groups: int) -> None:
    """LiT (Zhai et al. 2022): freeze the image tower except its last ``unlocked_groups`` groups."""
    visual: Any = model.visual
    try:
        visual.lock(unlocked_groups=unlocked_groups)
    except AssertionError as err:  # open_clip's ModifiedResNet refuses partial locking with an assert
        raise ValueError(
            f"{type(visual).__name__} cannot be partially unlocked ({err}); use unlocked_image_groups: 0"
        ) from err


def lock_text_tower(model: nn.Module, unlocked_layers: int) -> None:
    """Freeze the text tower except its last ``unlocked_layers`` groups (open_clip's grouping)."""
    from open_clip.transformer import lock_text_tower as open_clip_lock_text

    open_clip_lock_text(model, unlocked_layers)


def frozen_modules(tower: nn.Module) -> list[nn.Module]:
    """The largest submodules of ``tower`` with state whose parameters are all frozen (kept in eval mode)."""
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        params = list(module.parameters())
        has_state = bool(params) or any(True for _ in module.buffers())
        if has_state and not any(p.requires_grad for p in params):
            out.append(module)
            return
        for child in module.children():
            visit(child)

    visit(tower)
    return out
