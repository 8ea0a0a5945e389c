"""The base of every module built on one backbone: the arguments that make it.

:class:`~lightning_tl.modules.PretrainModule` (the self-supervised methods),
:class:`~lightning_tl.modules.FineTuneModule` (ImageClassifier, AdapterResNet) and
:class:`~lightning_tl.modules.DANN` (with CDAN and MCC) take their own arguments and pass the rest
(``**kwargs``) down to :class:`BackboneModule`, which builds ``self.backbone`` (or takes a module as it is)
and saves the arguments of every level as hyperparameters. The CLI (jsonargparse) follows the
``**kwargs`` through the levels, so ``--model.init_args.backbone_kwargs`` and ``--help`` list them all.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from lightning_tl.backbones import Backbone
from lightning_tl.modules._pretrained import DataMismatchCheck, make_backbone
from lightning_tl.modules._rng import RNGCheckpoint
from lightning_tl.unexpected_args import refuse_unexpected_args

#: Module arguments that were renamed: old name -> the name to use.
RENAMED: dict[str, str] = {"model_kwargs": "backbone_kwargs"}
_HINTS = {old: f"it is called {new!r}" for old, new in RENAMED.items()}


def check_backbone_module(backbone: nn.Module, in_channels: int, settings: dict[str, Any]) -> None:
    """A module used as the backbone must expose ``num_features``, take ``in_channels`` channels and come
    without ``create_backbone`` settings (``settings``: those that are set), which it would not use."""
    if not isinstance(getattr(backbone, "num_features", None), int):
        raise ValueError(
            f"a backbone module must have an int attribute num_features (its feature width); "
            f"{type(backbone).__name__} has none. Wrap it, or pass a create_backbone name"
        )
    first = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != in_channels:
        raise ValueError(
            f"the backbone's first convolution takes {first.in_channels} channels but the data has "
            f"{in_channels}; set the backbone's in_chans: {in_channels}"
        )
    if settings:
        raise ValueError(
            f"{', '.join(f'{k}={v!r}' for k, v in settings.items())} configure create_backbone, but the "
            f"backbone is a module ({type(backbone).__name__}), used as it is: drop them, or pass a "
            "create_backbone name"
        )


class BackboneModule(DataMismatchCheck, RNGCheckpoint, L.LightningModule):
    """A LightningModule on a backbone from :func:`~lightning_tl.backbones.create_backbone` or of one's own.

    The hyperparameters are saved here, from the arguments of every ``__init__`` of the subclass chain
    as they stand when the chain reaches this one: a subclass that resolves a default (None = the
    paper's value) before calling ``super().__init__`` saves the value in effect. Checkpoints carry
    every rank's RNG states, and at fit start a warning names data that does not fit hub weights.

    Args:
        backbone: ``create_backbone`` name (``"resnet18"``, ``"timm/resnet26"``), or a module used as it
            is: images (B, C, H, W) -> features (B, F) with an int ``num_features`` = F (e.g.
            :class:`~lightning_tl.nn.SmallConvNet`; ``class_path`` in a recipe). A module is not saved
            as a hyperparameter: pass it again to ``load_from_checkpoint``.
        backbone_kwargs: extra constructor arguments of the backbone (e.g. timm ResNet ``channels``).
        pretrained: the backbone's weights, as ``create_backbone`` takes them: None / False random; True
            the hub weights of ``backbone`` (timm tag, e.g. ``"timm/resnet50.a1_in1k"``, or
            torchvision's DEFAULT); a torchvision weights name (``"IMAGENET1K_V2"``); or a local file
            (.safetensors, state dict, timm/torchvision checkpoint, Lightning .ckpt of ours), read
            without unpickling. At fit start a warning names any difference between the
            datamodule's mean/std / image size and the hub weights'.
        small_input: 3x3 stride-1 stem without max-pool, for 8-32 px images (SimCLR, Appendix B.9).
            None: True without weights; with weights, what they need (hub weights: False; a local
            file: its own stem).
        in_channels: image channels; linked from the datamodule by the CLI.
    """

    backbone: Backbone

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str | None = None,
        small_input: bool | None = None,
        in_channels: int = 3,
        **removed: Any,
    ) -> None:
        super().__init__()
        refuse_unexpected_args(type(self).__name__, removed, _HINTS)
        if isinstance(backbone, nn.Module):
            named = {"backbone_kwargs": backbone_kwargs, "pretrained": pretrained, "small_input": small_input}
            settings = {k: v for k, v in named.items() if v not in (None, False, {})}
            check_backbone_module(backbone, in_channels, settings)
            self.save_hyperparameters(ignore=["backbone"])  # a module is not a setting
            self.backbone = backbone  # type: ignore[assignment]  # duck-typed: forward + num_features
        else:
            self.save_hyperparameters()
            self.backbone = make_backbone(backbone, backbone_kwargs, pretrained, small_input, in_channels)
