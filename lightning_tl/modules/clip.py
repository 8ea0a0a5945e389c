"""CLIP as a LightningModule: an image and a text tower trained with the symmetric contrastive loss.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021;
locked-image tuning from Zhai et al., "LiT: Zero-Shot Transfer with Locked-image text Tuning", CVPR 2022.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_tl.losses import clip_loss
from lightning_tl.modules._clip_towers import (
    create_backbone_clip,
    create_open_clip,
    frozen_modules,
    lock_image_tower,
    lock_text_tower,
)
from lightning_tl.modules._optim import WarmupCosineOptimizer
from lightning_tl.modules._pretrained import backbone_small_input
from lightning_tl.modules._rng import RNGCheckpoint
from lightning_tl.optim import OptimizerFactory
from lightning_tl.tokenizers import CLIP_BPE, HF_HUB, model_tokenizer, open_clip_config, tokenizer_kind

#: open_clip's BPE tokenizer vocabulary size (49,152 merges + 256 bytes, start and end tokens).
VOCAB_SIZE = 49408


class CLIP(WarmupCosineOptimizer, RNGCheckpoint, L.LightningModule):
    """Contrastive image-text training (CLIP) or locked-image tuning (LiT) of open_clip towers.

    Batches are dicts ``{"image": (B, C, H, W), "text": (B, L) int64 tokens, "label": (B,)}`` from
    :class:`~lightning_tl.datamodules.ImageTextDataModule` (``label`` is optional, -1 for none).
    The towers are either an open_clip model (``model_name``: any ``open_clip.list_models()`` name or
    ``hf-hub:org/name``, random or with the weights ``pretrained`` names, through open_clip's own
    loader and the Hugging Face cache; models with Hugging Face text towers need ``transformers``) or,
    with ``model_name=None``, a
    ``create_backbone`` image tower + linear projection and open_clip's text transformer of the
    given width/depth (small CPU-sized models).

    The temperature is learnable, initialised to 0.07 (``logit_scale = log(1 / 0.07)``) and, as in
    the paper (Sec. 2.5), clipped after every optimizer step so the logit multiplier never exceeds
    ``max_logit_scale`` (100). ``lock_image`` freezes the image tower (LiT), including its batch-norm
    statistics: the frozen part stays in eval mode whenever Lightning calls ``train()``, and runs
    without autograd when nothing in it is trainable; ``unlocked_image_groups`` keeps the last N
    groups trainable (blocks, with the projection as the last group). ``lock_text`` and
    ``unlocked_text_layers`` do the same for the text tower (open_clip's grouping).

    Overridable steps: :meth:`encode_image`, :meth:`encode_text`, :meth:`compute_loss`,
    :meth:`build_optimizer`, :meth:`build_scheduler`.

    Args:
        model_name: open_clip model name or ``hf-hub:org/name``; None builds the custom pair from the
            arguments below.
        pretrained: weights of the open_clip model: None / False random; an open_clip tag of
            ``model_name`` (``"openai"``, ``"laion2b_s34b_b79k"``: ``open_clip.list_pretrained()``);
            ``"hf-hub:org/name"`` (the same as ``model_name="hf-hub:org/name"``); or a local open_clip
            checkpoint file (read with ``weights_only=True`` first: a file that needs pickle is
            refused). The datamodule's tokenizer must be the model's (``tokenizer: <model_name>``).
        image_backbone: ``create_backbone`` name of the custom image tower.
        image_pretrained: weights of that backbone, as ``create_backbone``'s ``pretrained`` (None /
            False, True for hub weights, a torchvision weights name, or a local file).
        backbone_kwargs: extra model arguments for ``create_backbone``.
        small_input: 3x3 stride-1 ResNet stem for 8-32 px images; None: True without
            ``image_pretrained``, else what the weights need (see ``create_backbone``).
        in_channels: image channels (linked from the datamodule by the CLI); open_clip towers need 3.
        num_classes: labelled classes of the data (linked by the CLI); only read by callbacks.
        embed_dim, text_width, text_layers, text_heads: sizes of the custom pair.
        context_length: token sequence length of the custom text tower; open_clip models use their
            own (77) and this must be None or equal to it. Must match the datamodule's tokenizer.
        lock_image, unlocked_image_groups, lock_text, unlocked_text_layers: tower locking (see above).
        gather_distributed: contrast against every rank's pairs under DDP.
        local_loss: score only this rank's rows against the gathered columns (open_clip's
            ``--local-loss``): same gradients, W times smaller logit matrices.
        max_logit_scale: upper bound of ``exp(logit_scale)``.
        optimizer: a timm optimizer name or a callable on param groups.
        lr, weight_decay, momentum: optimizer settings (no weight decay on 1-D parameters such as
            the logit scale, norms and biases).
        warmup_epochs: linear warm-up before cosine decay.
    """

    model: Any  # open_clip CLIP / CustomTextCLIP or BackboneTextCLIP

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: bool | str | None = None,
        image_backbone: str = "resnet18",
        image_pretrained: bool | str | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        small_input: bool | None = None,
        in_channels: int = 3,
        num_classes: int | None = None,
        embed_dim: int = 128,
        text_width: int = 128,
        text_layers: int = 3,
        text_heads: int = 4,
        context_length: int | None = None,
        lock_image: bool = False,
        unlocked_image_groups: int = 0,
        lock_text: bool = False,
        unlocked_text_layers: int = 0,
        gather_distributed: bool = True,
        local_loss: bool = True,
        max_logit_scale: float = 100.0,
        optimizer: str | OptimizerFactory = "adamw",
        lr: float = 5e-4,
        weight_decay: float = 0.2,
        momentum: float = 0.9,
        warmup_epochs: float = 1.0,
    ) -> None:
        super().__init__()
        if unlocked_image_groups < 0 or unlocked_text_layers < 0:
            raise ValueError(
                f"unlocked_image_groups and unlocked_text_layers must be >= 0, got "
                f"{unlocked_image_groups} and {unlocked_text_layers}"
            )
        if (unlocked_image_groups and not lock_image) or (unlocked_text_layers and not lock_text):
            raise ValueError("unlocked_image_groups / unlocked_text_layers need lock_image / lock_text: true")
        if not max_logit_scale > 1:
            raise ValueError(f"max_logit_scale must be > 1, got {max_logit_scale} (CLIP uses 100)")
        if not lr > 0 or warmup_epochs < 0:
            raise ValueError(
                f"need lr > 0 and warmup_epochs >= 0, got lr={lr}, warmup_epochs={warmup_epochs}"
            )
        if isinstance(pretrained, str) and pretrained.startswith(HF_HUB):
            if model_name not in (None, pretrained):
                raise ValueError(
                    f"pretrained={pretrained!r} is a whole open_clip model (config and weights); drop "
                    f"model_name={model_name!r} or set it to {pretrained!r}"
                )
            model_name, pretrained = pretrained, None
        self._tokenizer = CLIP_BPE  # what the custom text tower reads
        if model_name is not None:
            config = open_clip_config(model_name)
            self._tokenizer = model_tokenizer(config)
            own = int(config.get("text_cfg", {}).get("context_length", 77))
            if context_length is not None and context_length != own:
                raise ValueError(
                    f"{model_name!r} has context_length {own}, got context_length={context_length}; "
                    f"drop it or set it (and the datamodule's) to {own}"
                )
            context_length = own
        elif context_length is None:
            context_length = 77
        self.save_hyperparameters(ignore=["optimizer"] if callable(optimizer) else None)
        # The resolved length: Lightning logs the module's and the datamodule's hparams together and
        # refuses a key with two values (LightningCLI saves the config's None otherwise).
        self.hparams["context_length"] = context_length
        self._hparams_initial["context_length"] = context_length  # type: ignore[index,operator]
        if model_name is not None:
            if in_channels != 3:
                raise ValueError(
                    f"open_clip model {model_name!r} takes RGB images but in_channels={in_channels}; "
                    "set the datamodule's rgb: true"
                )
            self.model = create_open_clip(model_name, pretrained)
        else:
            if pretrained is not None:
                raise ValueError(
                    "pretrained is an open_clip checkpoint and needs model_name; "
                    "use image_pretrained for the create_backbone image tower"
                )
            self.model = create_backbone_clip(
                image_backbone,
                image_pretrained,
                backbone_small_input(small_input, image_pretrained, True),
                in_channels,
                backbone_kwargs,
                embed_dim,
                context_length,
                VOCAB_SIZE,
                text_width,
                text_layers,
                text_heads,
            )
        self.context_length = context_length
        self.keep_optimizer_settings(optimizer, lr, weight_decay, momentum, warmup_epochs)
        self.gather_distributed, self.local_loss = gather_distributed, local_loss
        self.max_log_scale = math.log(max_logit_scale)
        if lock_image:
            lock_image_tower(self.model, unlocked_image_groups)
        if lock_text:
            lock_text_tower(self.model, unlocked_text_layers)
        self._frozen_image = frozen_modules(self.model.visual) if lock_image else []
        self._image_trainable = any(p.requires_grad for p in self.model.visual.parameters())
        self.train()

    # ---- the steps a subclass overrides -------------------------------------------------------
    @property
    def logit_scale(self) -> Tensor:
        """The learnable log of the logit multiplier (a scalar parameter)."""
        return self.model.logit_scale

    def encode_image(self, image: Tensor, normalize: bool = True) -> Tensor:
        """Images (B, C, H, W) -> embeddings (B, E), L2-normalised unless ``normalize=False``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._image_trainable):
            z = self.model.encode_image(image)  # (B, E)
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """Tokens (B, L) -> embeddings (B, E), L2-normalised unless ``normalize=False``."""
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(
                f"text tokens must be (B, {self.context_length}) for this model, got {tuple(tokens.shape)}; "
                f"tokenize with context_length={self.context_length}"
            )
        z = self.model.encode_text(tokens)  # (B, E)
        return F.normalize(z, dim=-1) if normalize else z

    def encode(self, x: Tensor) -> Tensor:
        """Unnormalised image embeddings (B, E): what kNN / linear-probe callbacks read."""
        return self.encode_image(x, normalize=False)

    def compute_loss(self, image_features: Tensor, text_features: Tensor, gather: bool) -> Tensor:
        """Symmetric InfoNCE of CLIP over normalised (B, E) embeddings."""
        scale = self.logit_scale.exp()
        return clip_loss(
            image_features, text_features, scale, gather=gather, local_loss=gather and self.local_loss
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.encode_image(image)

    # ---- Lightning hooks ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> CLIP:
        """Switch modes, keeping the locked part of the image tower in eval mode (frozen BN statistics)."""
        super().train(mode)
        for module in getattr(self, "_frozen_image", []):
            module.eval()
        return self

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        length = getattr(datamodule, "context_length", None)
        if length is not None and length != self.context_length:
            raise ValueError(
                f"the datamodule tokenizes to context_length={length} but the model's text tower takes "
                f"{self.context_length}; set data context_length: {self.context_length} (or the model's "
                "context_length to match, for a custom text tower)"
            )
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is not None and tokenizer_kind(tokenizer) != self._tokenizer:
            name = self.hparams.get("model_name")
            raise ValueError(
                f"the datamodule tokenizes with {tokenizer_kind(tokenizer)} but the model's text tower "
                f"reads {self._tokenizer}; set data tokenizer: {name if name else 'null'}"
            )

    def _check_batch(self, batch: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if not isinstance(batch, dict) or "image" not in batch:
            raise ValueError(
                f"CLIP expects dict batches {{'image', 'text', 'label'}} from ImageTextDataModule, got "
                f"{type(batch).__name__}"
            )
        return batch["image"], batch.get("text"), batch.get("label")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, tokens, _ = self._check_batch(batch)
        if tokens is None:
            raise ValueError("CLIP training batches need captions under 'text'")
        loss = self.compute_loss(self.encode_image(images), self.encode_text(tokens), self.gather_distributed)
        n = images.shape[0]
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, batch_size=n)
        self.log("logit_scale", self.logit_scale.detach().exp(), batch_size=n)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Image embeddings and labels for callbacks; the in-batch loss when the batch has captions.

        Eval shards can differ by a batch between ranks, so this loss contrasts within each rank's batch.
        """
        images, tokens, labels = self._check_batch(batch)
        features = self.encode_image(images)
        if tokens is not None:
            loss = self.compute_loss(features, self.encode_text(tokens), gather=False)
            self.log("val_loss", loss, sync_dist=True, batch_size=images.shape[0])
        if labels is None:
            labels = torch.full((images.shape[0],), -1, dtype=torch.long, device=images.device)
        return {"features": features, "labels": labels}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self.validation_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        images, _, labels = self._check_batch(batch)
        return {
            "features": self.encode_image(images),
            "labels": labels if labels is not None else images.new_empty(0),
        }

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then clip the logit scale to [0, log(max_logit_scale)] (CLIP, Sec. 2.5)."""
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            self.logit_scale.clamp_(0, self.max_log_scale)
