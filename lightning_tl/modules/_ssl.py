"""What BYOL, SimSiam, Barlow Twins, VICReg and DINO share: checks of settings and data, the two-view step.

Their heads need at least 2 images per process for batch norm (and Barlow Twins / VICReg for their batch
statistics); :class:`~lightning_tl.modules.PretrainModule` calls :func:`check_datamodule` at fit setup.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_tl.modules._pretrain import FeatureSteps, split_views


def check_positive(value: float, name: str, hint: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value > 0`` (NaN fails too)."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}; {hint}")


def check_datamodule(
    module: L.LightningModule,
    method: str,
    recipe: str,
    global_views: int | None = 2,
    local_views: bool = False,
) -> None:
    """At fit setup: the datamodule's view recipe makes what ``method`` trains on, and its batches hold
    >= 2 images a process (batch norm in the heads takes batch statistics).

    ``recipe`` names the view recipe to suggest (``"BYOLViews"``); the datamodule must make
    ``global_views`` views of the image size (None: any number >= 2), and smaller local views only when
    ``local_views``.
    Datamodules without a ``views`` recipe are checked on ``num_views`` only, if they have it.
    """
    datamodule = getattr(module.trainer, "datamodule", None) if module._trainer is not None else None
    if datamodule is None:
        return
    fix = f"set data views: {{class_path: lightning_tl.augment.{recipe}}}"
    views = getattr(datamodule, "views", None)
    num_views = getattr(datamodule, "num_views", None)
    if (hasattr(datamodule, "views") and views is None) or num_views == 0:
        raise ValueError(
            f"{method} trains on multi-view batches but the datamodule makes 0 views per image "
            f"(supervised batches, no view recipe); {fix}."
        )
    n_global = getattr(views, "num_global_views", None)
    n_local = getattr(views, "num_local_views", None)
    if n_global is not None and n_local is not None:
        wrong_count = n_global < 2 if global_views is None else n_global != global_views
        if wrong_count or (n_local and not local_views):
            count = ">= 2" if global_views is None else global_views
            wanted = f"{count} global views" + (" (and local ones)" if local_views else "")
            raise ValueError(
                f"{method} trains on {wanted}, "
                f"but the datamodule's {views!r} makes {n_global} global and {n_local} local views; {fix}."
            )
    elif num_views is not None and num_views < 2:
        raise ValueError(
            f"{method} trains on multi-view batches but the datamodule has num_views={num_views}; {fix}."
        )
    batch = getattr(datamodule, "batch_size", None)
    if batch is not None and batch < 2:
        raise ValueError(
            f"{method} needs at least 2 images per process (batch norm in its heads takes batch statistics); "
            f"got batch_size={batch}. Use batch_size >= 2 (the paper uses 256-4096)."
        )


def encode_two_views(module: FeatureSteps, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
    """A batch ``(views, labels)`` of two (B, C, H, W) views -> (both views (2B, C, H, W), their
    representations ``module.encode`` (2B, F), labels (B,)); checked for ``module``'s method."""
    views, labels = split_views(batch, type(module).__name__, exactly=2)
    x = torch.cat(views)  # (2B, C, H, W)
    return x, module.encode(x), labels  # (2B, F)


def embedding_pair_step(module: Any, batch: Any) -> dict[str, Tensor]:
    """The training step of Barlow Twins and VICReg: ``module.compute_loss(z1, z2)`` of the two views'
    embeddings ``module.project(module.encode(view))``, (B, D) each."""
    _, h, labels = encode_two_views(module, batch)
    z1, z2 = module.project(h).chunk(2)  # (B, D) each
    return module.training_output(module.compute_loss(z1, z2), h.chunk(2)[0], labels)
