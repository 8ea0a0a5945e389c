"""What the evaluation callbacks read from a module's steps: ``{"features" (B, D), "labels" (B,)}``.

:class:`~lightning_tl.callbacks.OnlineLinearProbe` and :class:`~lightning_tl.callbacks.ZeroShotEvaluator`
score the features a module's ``training_step`` / ``validation_step`` return; label -1 marks an
unlabelled row, which they skip. :class:`StepFeaturesCallback` hands them every validation batch's
output through one method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override


def step_features(outputs: Any, owner: str, hook: str) -> tuple[Tensor, Tensor]:
    """Detached float features (B, D) and long labels (B,) from the output dict of the module's ``hook``.

    Raises ``ValueError`` naming ``owner`` (the callback) when the output is not such a dict.
    """
    if not isinstance(outputs, Mapping) or "features" not in outputs or "labels" not in outputs:
        got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise ValueError(
            f"{owner} needs `{hook}` to return a dict with 'features' (B, D) backbone features "
            f"and 'labels' (B,) long labels (-1 for unlabelled); got {got}."
        )
    features, labels = outputs["features"], outputs["labels"]
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"{owner} expects 'features' (B, D) and 'labels' (B,), got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}."
        )
    return features.detach().float(), labels.detach().long()


def labelled_rows(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The rows of features (B, D) and labels (B,) whose label is not -1 (unlabelled): (N, D), (N,)."""
    keep = labels >= 0
    return features[keep], labels[keep]


class StepFeaturesCallback(Callback):
    """Base of the callbacks that score validation outputs: each batch's output goes to
    :meth:`on_step_features` (a subclass may route test batches there too:
    ``on_test_batch_end = StepFeaturesCallback.on_validation_batch_end``)."""

    def on_step_features(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        """Score one evaluation batch's step output (None when the step returned nothing)."""

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.on_step_features(trainer, pl_module, outputs)
