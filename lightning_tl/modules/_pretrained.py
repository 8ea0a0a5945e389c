"""What the modules share about (pretrained) backbones: how they are created, and data that fits the weights.

Every module builds its backbone with :func:`make_backbone` (``create_backbone`` with a small-input stem
unless weights say otherwise). Pretrained weights expect images normalised as in their training
(mean/std) and of about their training size; :func:`warn_data_mismatch` says at fit start when the
datamodule's differ (:class:`DataMismatchCheck` calls it from ``on_fit_start``).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L

from lightning_tl.backbones import Backbone, create_backbone
from lightning_tl.weights import DataConfig

#: How far the datamodule's mean/std may be from the weights' before a warning.
TOLERANCE = 1e-3


def backbone_small_input(
    small_input: bool | None, pretrained: bool | str | None, default: bool
) -> bool | None:
    """The ``small_input`` a module passes to ``create_backbone``.

    An explicit value is kept. With no weights (``pretrained`` None/False) the module's ``default``
    applies (its 3x3 stem for small images); with weights, None lets ``create_backbone`` follow them
    (hub weights: their published stem; a local file: the file's own stem).
    """
    if small_input is not None:
        return small_input
    return default if pretrained in (None, False) else None


def make_backbone(
    backbone: str,
    backbone_kwargs: dict[str, Any] | None,
    pretrained: bool | str | None,
    small_input: bool | None,
    in_channels: int,
) -> Backbone:
    """``create_backbone`` from a module's arguments: a small-input stem without weights, unless told."""
    return create_backbone(
        backbone,
        pretrained=pretrained,
        small_input=backbone_small_input(small_input, pretrained, True),
        in_chans=in_channels,
        model_kwargs=backbone_kwargs,
    )


def warn_random_backbone(module: str, backbone: str, purpose: str, stacklevel: int = 3) -> None:
    """Warn that ``pretrained=None`` leaves the backbone of a fine-tuning ``module`` random
    (``stacklevel`` counts from this function: 3 points at the caller of the caller)."""
    warnings.warn(
        f"{module}: pretrained=None, the {backbone} is randomly initialised; pass pretrained=True (hub "
        f"weights), a torchvision weights name or a local weight file to {purpose} pre-trained features.",
        stacklevel=stacklevel,
    )


def _close(data: list[float], weights: tuple[float, ...]) -> bool:
    if len(data) == 1 and len(weights) > 1:  # grayscale: the first conv sums the RGB filters
        weights = (sum(weights) / len(weights),)
    return len(data) == len(weights) and all(
        abs(a - b) <= TOLERANCE for a, b in zip(data, weights, strict=True)
    )


def warn_data_mismatch(module: L.LightningModule, config: DataConfig | None) -> None:
    """Warn when the datamodule's mean/std or image size differ from what the weights were trained with.

    Call it at fit start (``on_fit_start``): the datamodule has its ``mean``/``std`` after ``setup``.
    Nothing happens for random or local-file weights (``config`` None) or without a datamodule.
    """
    trainer = module._trainer
    datamodule: Any = getattr(trainer, "datamodule", None) if trainer is not None else None
    if config is None or datamodule is None:
        return
    name = type(module).__name__
    mean: list[float] | None
    std: list[float] | None
    try:
        mean, std = list(datamodule.mean), list(datamodule.std)
    except (AttributeError, AssertionError, TypeError):
        mean = std = None
    if mean is not None and std is not None and not (_close(mean, config.mean) and _close(std, config.std)):
        want_mean, want_std = list(config.mean), list(config.std)
        if len(mean) == 1 and len(want_mean) > 1:
            want_mean, want_std = [sum(want_mean) / len(want_mean)], [sum(want_std) / len(want_std)]
        fmt = ",".join
        warnings.warn(
            f"{name}: the datamodule normalises with mean={_round(mean)} std={_round(std)}, but the "
            f"weights {config.source} were trained with mean={_round(want_mean)} std={_round(want_std)}; "
            "features of differently normalised images are off. Override the datamodule's: "
            f"--data.init_args.mean=[{fmt(map(str, _round(want_mean)))}] "
            f"--data.init_args.std=[{fmt(map(str, _round(want_std)))}]",
            stacklevel=2,
        )
    size = getattr(datamodule, "image_size", None)
    if isinstance(size, int) and (size, size) != config.input_size:
        warnings.warn(
            f"{name}: the datamodule's images are {size}x{size} px but the weights {config.source} were "
            f"trained at {config.input_size[0]}x{config.input_size[1]}; set data image_size: "
            f"{config.input_size[0]} for features that transfer best.",
            stacklevel=2,
        )


class DataMismatchCheck(L.LightningModule):
    """Mixin: at fit start, warn when the datamodule's normalisation or image size differ from the
    weights of ``self.backbone`` (:func:`warn_data_mismatch`)."""

    def on_fit_start(self) -> None:
        """Warn when the datamodule's normalisation or image size differ from the pretrained weights'."""
        warn_data_mismatch(self, getattr(self.backbone, "data_config", None))


def _round(values: list[float]) -> list[float]:
    return [round(float(v), 4) for v in values]
