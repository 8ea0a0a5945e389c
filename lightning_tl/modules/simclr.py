"""SimCLR as a LightningModule: two augmented views, a shared encoder, a projection MLP, NT-Xent.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_tl import distributed as dist
from lightning_tl.heads import SimCLRProjectionHead
from lightning_tl.losses import nt_xent_loss
from lightning_tl.modules._optim import WarmupCosineOptimizer, sqrt_scaled_lr
from lightning_tl.modules._pretrain import FeatureSteps, encode_by_size, split_views
from lightning_tl.modules._pretrained import make_backbone
from lightning_tl.optim import OptimizerFactory


class SimCLR(FeatureSteps, WarmupCosineOptimizer, L.LightningModule):
    """Self-supervised pre-training with SimCLR.

    Batches are ``(views, labels)``: a list of at least two (B, C, H, W) views of the same images (a view
    recipe such as ``views: SimCLRViews`` in our datamodules); labels are only passed on to evaluation
    callbacks. With more than two views the loss is averaged over every pair of views. Views may differ in
    size (multi-crop: global and local views); views of one size go through the backbone together.


    Overridable steps, in the order a training step calls them: :meth:`encode` (backbone features),
    :meth:`project` (projection head), :meth:`compute_loss` (NT-Xent over view pairs); and
    :meth:`build_optimizer` / :meth:`build_scheduler`.

    Args:
        backbone: ``create_backbone`` name (``"resnet18"``, ``"timm/resnet26"``).
        backbone_kwargs: extra model arguments for ``create_backbone`` (e.g. timm ResNet ``channels``).
        pretrained: the backbone's weights, as ``create_backbone`` takes them: None / False random; True
            the hub weights of ``backbone`` (timm tag, e.g. ``"timm/resnet50.a1_in1k"``, or
            torchvision's DEFAULT); a torchvision weights name (``"IMAGENET1K_V2"``); or a local file
            (.safetensors, state dict, timm/torchvision checkpoint, Lightning .ckpt of ours), read
            without unpickling. At fit start a warning names any difference between the
            datamodule's mean/std / image size and the hub weights'.
        small_input: 3x3 stride-1 stem without max-pool, for 8-32 px images (paper, Appendix B.9).
            None: True without weights; with weights, what they need (hub weights: False; a local
            file: its own stem).
        in_channels: image channels; linked from the datamodule by the CLI.
        num_classes: number of labelled classes, linked from the datamodule; not used for training,
            kept so evaluation callbacks and subclasses can read it.
        hidden_dim: projection MLP width; None takes the backbone's feature width (the paper's choice).
        output_dim: projection output (128 in the paper).
        head_layers: Linear layers in the projection head (2 in SimCLR, 3 in SimCLR v2).
        temperature: NT-Xent tau; 0.5 suits small data and batches (paper Table 5, B.9 uses 0.5 for CIFAR-10).
        gather_distributed: take negatives from every rank under DDP.
        optimizer: a timm optimizer name (``"lars"``, ``"sgd"``, ``"adamw"``, ...) or a callable taking
            param groups and returning an optimizer (``class_path: torch.optim.SGD`` in a config).
        lr: base learning rate; None applies the paper's square-root scaling 0.075 * sqrt(global batch)
            (Appendix B.1), meant for LARS/SGD; set it for other optimizers.
        weight_decay: applied to weights with ndim >= 2 only (1e-6 in the paper with LARS).
        momentum: for SGD-type optimizers.
        warmup_epochs: linear warm-up length before cosine decay (10 in the paper); may be fractional.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str | None = None,
        small_input: bool | None = None,
        in_channels: int = 3,
        num_classes: int | None = None,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        head_layers: int = 2,
        temperature: float = 0.5,
        gather_distributed: bool = True,
        optimizer: str | OptimizerFactory = "lars",
        lr: float | None = None,
        weight_decay: float = 1e-6,
        momentum: float = 0.9,
        warmup_epochs: float = 10.0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(
                f"temperature must be > 0, got {temperature}; the paper uses 0.1-1.0 (0.5 here)."
            )
        if lr is not None and not lr > 0:
            raise ValueError(f"lr must be > 0 or None (square-root scaling), got {lr}.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if lr is None and isinstance(optimizer, str) and optimizer.lower() not in {"lars", "sgd"}:
            raise ValueError(
                f"lr=None scales the learning rate for LARS/SGD only; set lr for optimizer={optimizer!r}."
            )
        self.save_hyperparameters(ignore=["optimizer"] if callable(optimizer) else None)
        self.keep_optimizer_settings(optimizer, lr, weight_decay, momentum, warmup_epochs)
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.backbone = make_backbone(backbone, backbone_kwargs, pretrained, small_input, in_channels)
        width = self.backbone.num_features
        self.projection_head = SimCLRProjectionHead(width, hidden_dim or width, output_dim, head_layers)

    # ---- the steps a subclass overrides (and :meth:`encode`, the backbone) --------------------------
    def encode_views(self, views: list[Tensor]) -> Tensor:
        """Views (each (B, C, H_v, W_v)) -> features (V*B, F) in view order; views of one size pass the
        backbone together, so batch-norm statistics are taken over all of them."""
        return encode_by_size(self.encode, views)

    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> projection z (B, output_dim) that the loss sees."""
        return self.projection_head(h)

    def compute_loss(self, projections: list[Tensor]) -> Tensor:
        """NT-Xent averaged over every pair of views; ``projections`` holds one (B, D) tensor per view."""
        pairs = list(combinations(projections, 2))
        losses = [nt_xent_loss(a, b, self.temperature, gather=self.gather_distributed) for a, b in pairs]
        return torch.stack(losses).mean()

    # ---- Lightning hooks --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None:
            views = getattr(datamodule, "num_views", None)
            if views is not None and views < 2:
                raise ValueError(
                    f"SimCLR trains on multi-view batches but the datamodule makes {views} views per image; "
                    "give it a view recipe, e.g. views: {class_path: lightning_tl.augment.SimCLRViews}."
                )
            batch = getattr(datamodule, "batch_size", None)
            if batch is not None and batch * dist.world_size() < 2:
                raise ValueError(
                    f"SimCLR needs at least 2 images per global batch for negatives; got batch_size={batch}. "
                    "Use batch_size >= 2 (the paper uses 256-8192; 128-512 suits small data)."
                )

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        views, labels = split_views(batch, "SimCLR")
        n = views[0].shape[0]
        h = self.encode_views(views)  # (V*B, F)
        z = self.project(h)  # (V*B, D)
        loss = self.compute_loss(list(z.split(n)))
        return self.training_output(loss, h[:n], labels)

    def base_lr(self) -> float:
        """``lr`` if given, else 0.075 * sqrt(global batch size) (SimCLR, Appendix B.1)."""
        return sqrt_scaled_lr(self, self.lr, 0.075)
