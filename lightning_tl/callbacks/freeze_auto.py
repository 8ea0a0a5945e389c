"""The ``"auto"`` freeze strategy: linear probe, partial or full fine-tuning by labelled-data size.

:func:`choose_strategy` is the rule, a pure function of the number of labelled images and classes;
:class:`AutoBySize` applies it to a run, reading both from the Trainer's data when the
:class:`~lightning_tl.callbacks.FreezeSchedule` is not told them. The default thresholds pick
``"full"`` at every size: the evidence is in BENCHMARKS.md, "Layer freezing: transfer by strategy
and labelled-data size" (the CPU, H100 and "Which strategy wins by labels per class" tables) and the
cost of each strategy in "Layer freezing: step time and memory".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from lightning_tl.callbacks.freeze_strategies import (
    FreezeContext,
    FreezeStrategy,
    FullFinetune,
    LinearProbe,
    PartialFinetune,
)

#: Minimum labelled images (``*_min_samples``) and images per class (``*_min_per_class``) for
#: ``"auto"`` to pick ``full`` (both ``full_*`` hold), else ``partial`` (both ``partial_*`` hold), else
#: ``linear_probe``. All 0 by default, i.e. ``"auto"`` picks ``full`` at every size: fitted to
#: BENCHMARKS.md's layer-freezing tables, where full fine-tuning had the best mean accuracy at every
#: measured size, near and far target (see :func:`choose_strategy`). Override any of them with
#: ``FreezeSchedule(auto_thresholds={...})`` to trade accuracy for a cheaper step.
AUTO_THRESHOLDS = {
    "partial_min_samples": 0,
    "partial_min_per_class": 0,
    "full_min_samples": 0,
    "full_min_per_class": 0,
}


def check_thresholds(thresholds: dict[str, int] | None) -> dict[str, int]:
    """:data:`AUTO_THRESHOLDS` updated with ``thresholds``; unknown keys or negative values: ValueError."""
    unknown = set(thresholds or {}) - set(AUTO_THRESHOLDS)
    if unknown:
        raise ValueError(f"unknown auto_thresholds keys {sorted(unknown)}; known: {sorted(AUTO_THRESHOLDS)}.")
    bad = {k: v for k, v in (thresholds or {}).items() if not isinstance(v, int | float) or v < 0}
    if bad:
        raise ValueError(f"auto_thresholds must be numbers >= 0 (images, or images per class), got {bad}.")
    return {**AUTO_THRESHOLDS, **(thresholds or {})}


def choose_strategy(num_samples: int, num_classes: int, thresholds: dict[str, int] | None = None) -> str:
    """The strategy ``"auto"`` picks for ``num_samples`` labelled images of ``num_classes`` classes.

    ``full`` when ``num_samples >= full_min_samples`` and images per class ``>= full_min_per_class``,
    else ``partial`` when both ``partial_*`` minimums hold, else ``linear_probe``
    (:data:`AUTO_THRESHOLDS`, updated with ``thresholds``).

    The defaults (all 0: ``full`` at every size) come from our measurements, not from the textbook
    rule (Yosinski et al. 2014; the CS231n notes: probe below ~500 images / 50 per class, partial
    below ~5,000 / 500, which these thresholds encoded before). With each strategy's lr picked on a
    validation split (the protocol of Kornblith et al., CVPR 2019), full fine-tuning had the best
    mean test accuracy at every size measured, 1 to 2,000 labels per class, on a near and a far
    target: BENCHMARKS.md, "Which strategy wins by labels per class" (CPU, ``python -m benchmarks.run
    freeze_rule``) and "Transfer with a strong pre-training and per-strategy learning rates"
    (H100, ``benchmarks/transfer_gpu.py``).

    What freezing buys there is cost, not accuracy (BENCHMARKS.md, "Layer freezing: step time and
    memory"). Raise the thresholds when compute decides, e.g. ``{"full_min_per_class": 50}``
    (partial below 50 labels per class; its accuracy cost is in the same section). Untested: fewer
    labelled images than classes, and source models much stronger than the target needs (large
    ImageNet models on natural images), where probes are reported to compete.

    Example::

        >>> choose_strategy(250, 5)
        'full'
        >>> choose_strategy(250, 5, {"full_min_per_class": 100, "partial_min_per_class": 20})
        'partial'
    """
    if num_samples < 0 or num_classes < 1:
        raise ValueError(
            f"choose_strategy needs num_samples >= 0 and num_classes >= 1, got {num_samples}, {num_classes}."
        )
    t = check_thresholds(thresholds)
    per_class = num_samples / num_classes
    if num_samples >= t["full_min_samples"] and per_class >= t["full_min_per_class"]:
        return "full"
    if num_samples >= t["partial_min_samples"] and per_class >= t["partial_min_per_class"]:
        return "partial"
    return "linear_probe"


class AutoBySize(FreezeStrategy):
    """Linear probe, partial or full fine-tuning (:func:`choose_strategy`) for the run's data size.

    The number of labelled training images and classes come from ``FreezeSchedule(num_train_samples=...,
    num_classes=...)``, else from the datamodule (``labelled_dataset("train")``, ``num_classes``) or the
    train dataloader's dataset and the module's ``hparams.num_classes``; the thresholds from
    ``FreezeSchedule(auto_thresholds=...)``. The choice is logged and saved in checkpoints.
    """

    name = "auto"

    def check(self, ctx: FreezeContext) -> None:
        PartialFinetune().check(ctx)  # it may pick partial: trainable_groups must fit the model

    def resolve(self, ctx: FreezeContext) -> FreezeStrategy:
        samples, classes = ctx.num_train_samples, ctx.num_classes
        trainer: Any = ctx.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if samples is None:
            if datamodule is not None and hasattr(datamodule, "labelled_dataset"):
                samples = len(datamodule.labelled_dataset("train"))
            elif hasattr(getattr(trainer, "train_dataloader", None), "dataset"):
                samples = len(trainer.train_dataloader.dataset)
        if classes is None:
            hparams = getattr(ctx.module, "hparams", {})
            classes = getattr(datamodule, "num_classes", None) or hparams.get("num_classes")
        if samples is None or classes is None:
            raise ValueError(
                f"strategy='auto' needs the number of training samples ({samples}) and classes ({classes}); "
                "pass FreezeSchedule(num_train_samples=..., num_classes=...)."
            )
        choice = choose_strategy(int(samples), int(classes), ctx.auto_thresholds)
        rank_zero_info(
            f"FreezeSchedule: strategy='auto' chose {choice!r} for {samples} samples, {classes} classes."
        )
        picked: dict[str, Callable[[], FreezeStrategy]] = {
            "linear_probe": LinearProbe,
            "partial": PartialFinetune,
            "full": FullFinetune,
        }
        return picked[choice]()

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return self.resolve(ctx).groups(ctx)
