"""SimCLR as a LightningModule: two augmented views, a shared encoder, a projection MLP, NT-Xent.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from lightning_tl.heads import SimCLRProjectionHead
from lightning_tl.losses import nt_xent_loss
from lightning_tl.modules._optim import sqrt_scaled_lr
from lightning_tl.modules._pretrain import encode_by_size, split_views
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule


class SimCLR(PretrainModule):
    """Self-supervised pre-training with SimCLR.

    Batches are ``(views, labels)``: a list of at least two (B, C, H, W) views of the same images (a view
    recipe such as ``views: SimCLRViews`` in our datamodules); labels are only passed on to evaluation
    callbacks. With more than two views the loss is averaged over every pair of views. Views may differ in
    size (multi-crop: global and local views); views of one size go through the backbone together.


    Overridable steps, in the order a training step calls them: :meth:`encode` (backbone features),
    :meth:`project` (projection head), :meth:`compute_loss` (NT-Xent over view pairs); and
    :meth:`build_optimizer` / :meth:`build_scheduler`.

    Args:
        hidden_dim: projection MLP width; None takes the backbone's feature width (the paper's choice).
        output_dim: projection output (128 in the paper).
        head_layers: Linear layers in the projection head (2 in SimCLR, 3 in SimCLR v2).
        temperature: NT-Xent tau; 0.5 suits small data and batches (paper Table 5, B.9 uses 0.5 for CIFAR-10).
        gather_distributed: take negatives from every rank under DDP.
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): LARS, weight decay 1e-6, 10 warm-up epochs (Appendix B.1);
            ``lr=None``: 0.075 x sqrt(global batch), for LARS or SGD.
    """

    views_recipe = "SimCLRViews"
    num_global_views = None  # any number >= 2; multi-crop views may follow
    local_views = True
    paper_optimizer = PaperOptimizer("lars", 1e-6, warmup_epochs=10.0, lr_scales_for=("lars", "sgd"))

    def __init__(
        self,
        *,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        head_layers: int = 2,
        temperature: float = 0.5,
        gather_distributed: bool = True,
        **kwargs: Any,
    ) -> None:
        if not temperature > 0:
            raise ValueError(
                f"temperature must be > 0, got {temperature}; the paper uses 0.1-1.0 (0.5 here)."
            )
        super().__init__(**kwargs)
        self.temperature = temperature
        self.gather_distributed = gather_distributed
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
