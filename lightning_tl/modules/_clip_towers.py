"""The two towers of CLIP: open_clip's by name, or a ``create_backbone`` image tower + open_clip's text tower.

Both kinds expose open_clip's interface: ``visual`` (image tower), ``encode_image(x) -> (B, E)``,
``encode_text(tokens) -> (B, E)``, ``logit_scale`` (a learnable log-scale parameter) and
``context_length``; :func:`lock_image_tower` / :func:`lock_text_tower` freeze them as LiT does.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import TextTransformer
from open_clip.transformer import lock_text_tower as _open_clip_lock_text
from torch import Tensor, nn

from lightning_tl.backbones import Backbone, create_backbone
from lightning_tl.layer_groups import LayerGroup, _backbone_stages, assign

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
        stages = _backbone_stages(self.backbone.model)
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

    def __init__(
        self,
        visual: BackboneImageTower,
        embed_dim: int,
        context_length: int,
        vocab_size: int,
        text_width: int,
        text_layers: int,
        text_heads: int,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.text = TextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=text_width,
            heads=text_heads,
            layers=text_layers,
            output_dim=embed_dim,
        )
        self.context_length = context_length
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    def encode_image(self, image: Tensor) -> Tensor:
        return self.visual(image)  # (B, E)

    def encode_text(self, text: Tensor) -> Tensor:
        return self.text(text)  # (B, E)


def open_clip_config(model_name: str) -> dict[str, Any]:
    """The config of an ``open_clip.list_models()`` name that CLIP can train offline (checked)."""
    names = open_clip.list_models()
    if model_name not in names:
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown open_clip model {model_name!r}.{hint} open_clip.list_models() lists the "
            f"{len(names)} names; or leave model_name unset for a create_backbone image tower."
        )
    config: dict[str, Any] = open_clip.get_model_config(model_name) or {}
    text_cfg = config.get("text_cfg", {})
    if text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ValueError(
            f"{model_name!r} has a Hugging Face text tower or tokenizer, which downloads its files; "
            "choose a model with open_clip's own text transformer (e.g. 'ViT-B-32', 'RN50')"
        )
    if config.get("init_logit_bias") is not None or "siglip" in model_name.lower():
        raise ValueError(
            f"{model_name!r} is a SigLIP model (sigmoid loss with a logit bias); CLIP trains "
            "with the softmax contrastive loss: choose a CLIP model (e.g. 'ViT-B-32')"
        )
    return config


def create_open_clip(model_name: str, pretrained: str | None) -> nn.Module:
    """An open_clip model by ``open_clip.list_models()`` name, random or from a local checkpoint file.

    The file is any checkpoint ``open_clip.load_checkpoint`` reads: a state dict, or open_clip's
    training checkpoint ``{"state_dict": ..., "epoch": ...}`` (``module.`` prefixes are stripped).
    """
    open_clip_config(model_name)
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"pretrained={pretrained!r} is not a file: pass a local open_clip checkpoint (.pt/.bin/"
            ".safetensors); nothing is downloaded"
        )
    model = open_clip.create_model(model_name, pretrained=None)
    if pretrained is not None:
        try:
            open_clip.load_checkpoint(model, pretrained)
        except RuntimeError as err:
            raise ValueError(
                f"{pretrained!r} does not fit open_clip model {model_name!r}: {str(err)[:500]}"
            ) from err
    return model


def create_backbone_clip(
    image_backbone: str,
    image_pretrained: str | None,
    small_input: bool,
    in_channels: int,
    backbone_kwargs: dict[str, Any] | None,
    embed_dim: int,
    context_length: int,
    vocab_size: int,
    text_width: int,
    text_layers: int,
    text_heads: int,
) -> BackboneTextCLIP:
    """A :class:`BackboneTextCLIP` from its sizes (checked here, before anything is built)."""
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
    return BackboneTextCLIP(
        visual, embed_dim, context_length, vocab_size, text_width, text_layers, text_heads
    )


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
    _open_clip_lock_text(model, unlocked_layers)


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
