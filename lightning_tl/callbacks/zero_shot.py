"""Zero-shot classification with a CLIP model: class names x prompt templates -> a linear classifier.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021,
Sec. 3.1.4: each class is embedded through prompts such as "a photo of a {label}."; the embeddings
of a class's prompts are averaged ("ensembling ... in embedding space"), and images are assigned to
the class whose normalised text embedding has the highest cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_tl.callbacks._step_features import StepFeaturesCallback, labelled_rows

DEFAULT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "an image of a {}.")


def zero_shot_classifier(
    model: Any, tokenizer: Any, classnames: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> Tensor:
    """The (C, E) zero-shot weights: per class, the normalised mean of its normalised prompt embeddings.

    Args:
        model: anything with ``encode_text(tokens (B, L)) -> (B, E)``: our ``CLIP`` or an open_clip model.
        tokenizer: open_clip tokenizer (``tokenizer(list_of_str) -> (B, L)``).
        classnames: C class names, index = label.
        templates: T prompt templates, each with one ``{}`` for the class name.

    Returns:
        (C, E) float tensor with unit rows; ``F.normalize(image_features) @ weights.T`` are the logits.
    """
    if not classnames:
        raise ValueError("classnames is empty: give one name per class (index = label)")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates must be non-empty and each contain '{{}}', got {list(templates)}")
    model_length = getattr(model, "context_length", None)
    tok_length = getattr(tokenizer, "context_length", None)
    if model_length is not None and tok_length is not None and int(model_length) != int(tok_length):
        raise ValueError(
            f"the tokenizer makes {tok_length} tokens but the model's text tower takes {model_length}; "
            f"create the tokenizer with context_length={model_length}"
        )
    device = next(model.parameters()).device
    texts = [t.format(name) for name in classnames for t in templates]
    with torch.no_grad():
        tokens = tokenizer(texts).to(device)  # (C*T, L)
        z = F.normalize(model.encode_text(tokens).float(), dim=-1)  # (C*T, E)
    z = z.view(len(classnames), len(templates), -1).mean(dim=1)  # (C, E)
    return F.normalize(z, dim=-1)


class ZeroShotEvaluator(StepFeaturesCallback):
    """Log zero-shot top-1 / top-5 accuracy of a CLIP module on its validation (and test) batches.

    At the start of each validation/test epoch the classifier is built with
    :func:`zero_shot_classifier` from ``classnames`` (default: ``trainer.datamodule.class_names``),
    ``templates`` and ``tokenizer`` (default: ``trainer.datamodule.tokenizer``). Every batch's
    ``outputs["features"]`` (image embeddings from the module's ``validation_step``) are scored
    against it and counted with torchmetrics, which sums the counts over ranks, so under DDP the
    accuracy is that of the whole split. Items with label -1 (uncaptioned data) are skipped.

    Args:
        classnames: class names, index = label; None reads the datamodule's.
        templates: prompt templates with one ``{}`` each.
        tokenizer: open_clip tokenizer; None reads the datamodule's.
        log_prefix: metrics are logged as ``{log_prefix}_top1`` and ``{log_prefix}_top5``.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[ZeroShotEvaluator(templates=["a photo of a {}."])], logger=False)
    """

    def __init__(
        self,
        classnames: Sequence[str] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        tokenizer: Any = None,
        log_prefix: str = "zero_shot",
    ) -> None:
        super().__init__()
        if not templates or any("{}" not in t for t in templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {list(templates)}")
        self.classnames = list(classnames) if classnames is not None else None
        self.templates = list(templates)
        self.tokenizer = tokenizer
        self.log_prefix = log_prefix
        self.history: list[tuple[int, float, float]] = []
        self._weights: Tensor | None = None
        self._metrics: dict[int, MulticlassAccuracy] = {}

    def _resolve(self, trainer: pl.Trainer) -> tuple[list[str], Any]:
        datamodule = getattr(trainer, "datamodule", None)
        names = self.classnames if self.classnames is not None else getattr(datamodule, "class_names", None)
        tokenizer = self.tokenizer if self.tokenizer is not None else getattr(datamodule, "tokenizer", None)
        if not names or tokenizer is None:
            raise ValueError(
                "ZeroShotEvaluator needs class names and a tokenizer: pass classnames= and tokenizer=, or "
                "use an ImageTextDataModule with labelled data"
            )
        return list(names), tokenizer

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names, tokenizer = self._resolve(trainer)
        self._weights = zero_shot_classifier(pl_module, tokenizer, names, self.templates)
        c = len(names)
        self._metrics = {
            k: MulticlassAccuracy(num_classes=c, top_k=min(k, c)).to(pl_module.device) for k in (1, 5)
        }

    @override
    def on_step_features(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        if self._weights is None or not isinstance(outputs, dict):
            return
        features, labels = labelled_rows(outputs["features"], outputs["labels"])
        if not labels.numel():
            return
        logits = F.normalize(features.float(), dim=-1) @ self._weights.T  # (B, C)
        for metric in self._metrics.values():
            metric.update(logits, labels)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._weights is None:
            return
        values = {k: float(m.compute()) for k, m in self._metrics.items()}  # summed over ranks
        for k, value in values.items():
            pl_module.log(f"{self.log_prefix}_top{k}", value, rank_zero_only=True)
        if not trainer.sanity_checking:
            self.history.append((trainer.current_epoch, values[1], values[5]))
        for m in self._metrics.values():
            m.reset()
        self._weights = None

    # the test split is scored as the validation split
    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_end = StepFeaturesCallback.on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end
