"""MoCo as a LightningModule: a query encoder, its momentum copy for the keys, and a queue of negatives.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning" (MoCo v2,
2020): MLP head, temperature 0.2, stronger augmentation; the symmetric loss as in MoCo v3 (Chen, Xie,
He, ICCV 2021).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_tl import distributed as dist
from lightning_tl.heads import ProjectionHead, mlp_blocks, mlp_widths
from lightning_tl.losses import info_nce_loss
from lightning_tl.modules._ema import frozen_copy
from lightning_tl.modules._pretrain import split_views
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule
from lightning_tl.nn.momentum import MemoryQueue, check_momentum, cosine_momentum, update_momentum
from lightning_tl.nn.shuffle_bn import shuffled_forward


class MoCo(PretrainModule):
    """Self-supervised pre-training with MoCo (v2 defaults).

    Batches are ``(views, labels)`` with two (B, C, H, W) views (a two-view recipe, e.g. ``views:
    MoCoV2Views``). View 1 goes through the query encoder (backbone + projection head); view 2 through the
    key encoder, a momentum copy of *both* backbone and head that gets no gradient. The loss is InfoNCE
    with the queue as negatives; then the keys of view 2 from every rank are enqueued. ``symmetric=True``
    also uses view 2 as query against the keys of view 1 and averages the two losses.


    State that resumes exactly: the key encoder is a submodule and the queue (keys, pointer) lives in
    buffers, so both are in every checkpoint; RNG states are saved as in SimCLR. The key encoder's
    batch-norm layers have ``momentum=0``: keys always use batch statistics, and their running
    statistics are the moving average of the query encoder's (see :func:`update_momentum`), the same
    on every rank.

    Batch norm: ``shuffle_bn`` (default) encodes the keys in an order shuffled across ranks under DDP
    (:func:`~lightning_tl.nn.shuffle_bn.shuffled_forward`); in one process it changes nothing and the
    key batch is normalised as one batch. ``sync_batchnorm`` converts every batch norm to
    ``SyncBatchNorm`` instead (GPUs only under DDP).

    With gradient accumulation (``accumulate_grad_batches > 1``) the key encoder is still updated and
    the queue filled on every micro-batch, so the effective momentum per optimizer step is m**k.

    Overridable steps: :meth:`encode`, :meth:`project`, :meth:`encode_keys`, :meth:`compute_loss`,
    :meth:`key_momentum_at`. A subclass that replaces ``backbone`` or ``projection_head`` after
    ``__init__`` calls :meth:`reset_key_encoder`.

    Args:
        hidden_dim: projection MLP width; None takes the backbone's feature width (MoCo v2: 2048).
        output_dim: key/query width (128 in MoCo).
        head_layers: Linear layers of the head (2 in MoCo v2: Linear-ReLU-Linear; 1 is MoCo v1's linear).
        queue_size: number of negative keys K (65536 in MoCo; at least the global batch size).
        temperature: InfoNCE tau (0.07 in MoCo v1, 0.2 in v2).
        key_momentum: momentum m of the key encoder (0.999 in MoCo; 0.99 suits short runs).
        key_momentum_schedule: ``"constant"``, or ``"cosine"`` raising m to ``final_key_momentum``
            over training (BYOL, MoCo v3).
        final_key_momentum: the cosine schedule's end value.
        symmetric: both views as queries (MoCo v3's symmetrised loss), twice the encoder work.
        shuffle_bn: shuffle the key batch across ranks under DDP (MoCo Sec. 3.3).
        sync_batchnorm: convert batch norms to ``SyncBatchNorm`` (exclusive with ``shuffle_bn``).
        **kwargs: the backbone and optimizer arguments of :class:`~lightning_tl.modules.PretrainModule`. The
            paper's optimizer (their None): SGD (momentum 0.9), weight decay 1e-4, no warm-up; ``lr=None``:
            0.03 x global batch / 256 (MoCo v2's 0.03 at batch 256), for SGD.
    """

    views_recipe = "MoCoV2Views"
    paper_optimizer = PaperOptimizer("sgd", weight_decay=1e-4, warmup_epochs=0.0)
    lr_per_256 = 0.03  # lr=None: 0.03 x global batch / 256 (MoCo v2's SGD setting)

    def __init__(
        self,
        *,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        head_layers: int = 2,
        queue_size: int = 65536,
        temperature: float = 0.2,
        key_momentum: float = 0.999,
        key_momentum_schedule: Literal["constant", "cosine"] = "constant",
        final_key_momentum: float = 1.0,
        symmetric: bool = False,
        shuffle_bn: bool = True,
        sync_batchnorm: bool = False,
        **kwargs: Any,
    ) -> None:
        if queue_size < 1:
            raise ValueError(
                f"queue_size must be >= 1, got {queue_size}; set it to a few thousand keys for small data "
                "(65536 in MoCo), and at least the global batch size."
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}; MoCo v2 uses 0.2.")
        check_momentum(key_momentum, "key_momentum")
        check_momentum(final_key_momentum, "final_key_momentum")
        if key_momentum_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"key_momentum_schedule must be 'constant' or 'cosine', got {key_momentum_schedule!r}."
            )
        if head_layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {head_layers}.")
        if shuffle_bn and sync_batchnorm:
            raise ValueError(
                "shuffle_bn and sync_batchnorm both fix BN leakage; pick one (set shuffle_bn: false)."
            )
        super().__init__(**kwargs)
        self.temperature, self.symmetric = temperature, symmetric
        self.key_momentum, self.key_momentum_schedule = key_momentum, key_momentum_schedule
        self.final_key_momentum = final_key_momentum
        self.shuffle_bn, self.sync_batchnorm = shuffle_bn, sync_batchnorm
        width = self.backbone.num_features
        dims = mlp_widths(width, hidden_dim or width, output_dim, head_layers)
        self.projection_head = ProjectionHead(mlp_blocks(dims, hidden_norm=False))  # MoCo v2: no BN
        self.queue = MemoryQueue(queue_size, output_dim)
        self.reset_key_encoder()

    def reset_key_encoder(self) -> None:
        """(Re)build the key encoder as a frozen copy of the current backbone and head."""
        if self.sync_batchnorm:
            self.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(self.backbone)
            self.projection_head = nn.SyncBatchNorm.convert_sync_batchnorm(self.projection_head)
        self.key_backbone = frozen_copy(self.backbone)  # batch norms: momentum 0, see update_momentum
        self.key_head = frozen_copy(self.projection_head)

    # ---- the steps a subclass overrides (and :meth:`encode`, the query backbone) ---------------------
    def project(self, h: Tensor) -> Tensor:
        """Representation (B, F) -> L2-normalised query (B, output_dim)."""
        return F.normalize(self.projection_head(h), dim=1)

    @torch.no_grad()
    def encode_keys(self, x: Tensor, seed: int) -> Tensor:
        """Images (B, C, H, W) -> L2-normalised keys (B, output_dim) of the key encoder, no gradient."""

        def key_encoder(images: Tensor) -> Tensor:
            return F.normalize(self.key_head(self.key_backbone(images)), dim=1)

        return shuffled_forward(key_encoder, x, seed) if self.shuffle_bn else key_encoder(x)

    def compute_loss(self, queries: list[Tensor], keys: list[Tensor], queue: Tensor) -> Tensor:
        """Mean InfoNCE of each (query, key) pair against ``queue`` (K, D)."""
        losses = [info_nce_loss(q, k, queue, self.temperature) for q, k in zip(queries, keys, strict=True)]
        return torch.stack(losses).mean()

    def key_momentum_at(self, step: int) -> float:
        """Key-encoder momentum at optimizer step ``step``."""
        if self.key_momentum_schedule == "constant":
            return self.key_momentum
        if self._total_steps is None:
            raise ValueError("key_momentum_schedule='cosine' needs the run length; train with a Trainer.")
        return cosine_momentum(step, self._total_steps, self.key_momentum, self.final_key_momentum)

    # ---- Lightning hooks --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.sync_batchnorm and dist.is_distributed() and self.device.type == "cpu":
            raise ValueError(
                "sync_batchnorm=True needs GPUs under DDP (torch's SyncBatchNorm does not run on CPU); "
                "use shuffle_bn: true, sync_batchnorm: false on CPU."
            )
        super().setup(stage)  # two views, >= 2 images a process
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or datamodule is None:
            return
        batch = getattr(datamodule, "batch_size", None)
        if batch is not None and batch * dist.world_size() > self.queue.size:
            raise ValueError(
                f"queue_size={self.queue.size} is smaller than the global batch {batch} x "
                f"{dist.world_size()} processes; set model queue_size >= {batch * dist.world_size()} "
                "(or a smaller batch_size)."
            )

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        views, labels = split_views(batch, "MoCo", exactly=2)
        n = views[0].shape[0]
        m = self.key_momentum_at(self.global_step)
        update_momentum(self.backbone, self.key_backbone, m)  # keys from the updated encoder (Alg. 1)
        update_momentum(self.projection_head, self.key_head, m)
        order = [0, 1] if self.symmetric else [0]
        h = [self.encode(views[i]) for i in order]  # (B, F) per query view
        queries = [self.project(f) for f in h]  # (B, D)
        seed = self.global_step * 1_000_003 + batch_idx
        keys = [self.encode_keys(views[1 - i], seed + 7919 * i) for i in order]  # (B, D) partner views
        loss = self.compute_loss(queries, keys, self.queue())
        self.queue.enqueue(keys[0])  # keys of view 2, from every rank
        self.log("key_momentum", m, batch_size=n)
        return self.training_output(loss, h[0], labels)
