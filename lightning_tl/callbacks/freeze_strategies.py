"""Freeze strategies: which parameters a :class:`~lightning_tl.callbacks.FreezeSchedule` trains first.

A strategy sees the model's layer groups (input to output, head last) through a
:class:`FreezeContext` and answers two questions: which groups train as a whole
(:meth:`~FreezeStrategy.groups`: their BatchNorm layers in train mode, their lrs warmed up when the
schedule unfreezes them), and which single parameters of the *frozen* groups train too
(:meth:`~FreezeStrategy.params`: BitFit's biases, norm-only's scales and shifts). Everything else
the schedule does (unfreezing milestones, layer-wise lrs, warm-up, BatchNorm modes, resume) is the
same for every strategy.

Built in, by registry name (:func:`~lightning_tl.callbacks.list_freeze_strategies`):

- ``"linear_probe"`` (:class:`LinearProbe`): the head only.
- ``"partial"`` (:class:`PartialFinetune`): the last ``trainable_groups`` groups below the head, and the head.
- ``"full"`` (:class:`FullFinetune`): everything, the pre-trained weights as the initialisation.
- ``"auto"`` (:class:`~lightning_tl.callbacks.freeze_auto.AutoBySize`): one of the three by data size.
- ``"bitfit"`` (:class:`BitFit`): the head and every bias (Ben Zaken, Ravfogel & Goldberg, ACL 2022).
- ``"norm_only"`` (:class:`NormOnly`): the head and the affine parameters of every normalisation layer.

A new strategy subclasses :class:`FreezeStrategy`; pass an instance, ``FreezeSchedule(strategy=MyStrategy())``
(in YAML: ``strategy: {class_path: my_package.MyStrategy}``), or register it by name with
:func:`~lightning_tl.callbacks.register_freeze_strategy`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

#: torch's normalisation layers with affine parameters (their subclasses count too: timm's
#: BatchNormAct2d, LayerNorm2d, GroupNorm1, ...).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    _BatchNorm,
    _InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


@dataclass(frozen=True, eq=False)
class FreezeContext:
    """What a strategy may look at: the model, its layer groups and the schedule's settings.

    Attributes:
        module: the LightningModule being trained.
        groups: layer group names, input to output, the head last.
        members: the parameter names (``module.named_parameters()``) of each group, same order.
        trainable_groups: ``FreezeSchedule(trainable_groups=...)``: groups below the head that
            ``"partial"`` trains.
        trainer: the Trainer, None outside a fit (``"auto"`` reads the data size from it).
        num_train_samples, num_classes, auto_thresholds: the schedule's settings for ``"auto"``.
    """

    module: nn.Module
    groups: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    trainable_groups: int = 1
    trainer: Any = None
    num_train_samples: int | None = None
    num_classes: int | None = None
    auto_thresholds: dict[str, int] | None = None

    def top(self, count: int) -> list[bool]:
        """Group flags: the last ``count`` groups (the head included) train, the others are frozen."""
        n = len(self.groups)
        return [i >= n - count for i in range(n)]

    def below_head(self) -> list[str]:
        """The parameter names of every group but the head, input to output."""
        return [name for names in self.members[:-1] for name in names]


class FreezeStrategy(ABC):
    """Decides which parameters train from the start; subclass it for a strategy of your own.

    ``name`` (a class attribute; the class name by default) is what logs and checkpoints record.
    ``freezes`` is False only for strategies that train every parameter from the start (DDP then
    needs no ``find_unused_parameters``).
    """

    name: ClassVar[str]
    freezes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def check(self, ctx: FreezeContext) -> None:
        """Raise ValueError, before training starts, if this strategy cannot work on ``ctx``'s model."""
        return None

    def resolve(self, ctx: FreezeContext) -> FreezeStrategy:
        """The strategy to apply at the start of training (``"auto"`` returns the one it picks)."""
        return self

    @abstractmethod
    def groups(self, ctx: FreezeContext) -> list[bool]:
        """One flag per layer group (input to output, head last): True = the whole group trains."""

    def params(self, ctx: FreezeContext) -> set[str]:
        """Names of parameters in frozen groups that train anyway (default: none)."""
        return set()


class LinearProbe(FreezeStrategy):
    """Only the head trains: the backbone is a fixed feature extractor (its BatchNorm statistics too)."""

    name = "linear_probe"

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return ctx.top(1)


class PartialFinetune(FreezeStrategy):
    """The head and the last ``FreezeSchedule(trainable_groups=...)`` groups below it train."""

    name = "partial"

    def check(self, ctx: FreezeContext) -> None:
        body = len(ctx.groups) - 1
        if ctx.trainable_groups > body:
            raise ValueError(
                f"trainable_groups={ctx.trainable_groups} but the model has only {body} groups below "
                f"the head: {list(ctx.groups[:-1])}; lower trainable_groups."
            )

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return ctx.top(1 + ctx.trainable_groups)


class FullFinetune(FreezeStrategy):
    """Every parameter trains; the pre-trained weights are only the initialisation."""

    name = "full"
    freezes = False

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return [True] * len(ctx.groups)


_BIAS = re.compile(r"(^|[._])bias$")


def is_bias(name: str) -> bool:
    """A bias term by its name: the last component is ``bias`` or ends in ``_bias``.

    ``_bias`` covers separate query/value biases (timm's BEiT ``q_bias``, ``v_bias``); tables such as
    ``relative_position_bias_table`` are not biases.

    Example::

        >>> [is_bias(n) for n in ("fc.bias", "bn.bias", "attn.q_bias", "fc.weight", "rel_pos_bias_table")]
        [True, True, True, False, False]
    """
    return _BIAS.search(name) is not None


class BitFit(FreezeStrategy):
    """The head and every bias term train; all weights stay frozen (BitFit).

    Ben Zaken, Ravfogel & Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
    Transformer-based Masked Language-models", ACL 2022: fine-tuning "only the bias-terms of the
    model (or a subset of them)" together with the task's classification layer. Biases are found by
    name (:func:`is_bias`); the shifts of normalisation layers are biases, as in the paper, where
    BERT's LayerNorm biases train. BatchNorm layers of frozen groups stay in eval mode, their running
    statistics fixed (``FreezeSchedule(train_bn=True)`` trains them and their scales too). A group the
    schedule unfreezes trains whole from then on; its biases keep their lr (no second warm-up).

    Example::

        freeze = FreezeSchedule(BitFit(), lr_decay=0.5)   # or FreezeSchedule("bitfit")
    """

    name = "bitfit"

    def check(self, ctx: FreezeContext) -> None:
        if not self.params(ctx):
            raise ValueError(
                f"BitFit found no bias parameters below the head (names ending in 'bias'; groups "
                f"{list(ctx.groups[:-1])}); the strategy would be a linear probe: use 'linear_probe'."
            )

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return ctx.top(1)

    def params(self, ctx: FreezeContext) -> set[str]:
        return {name for name in ctx.below_head() if is_bias(name)}


_NORM_NAME = re.compile(r"Norm(\dd)?$")


def norm_parameter_names(module: nn.Module) -> set[str]:
    """Names of the parameters that normalisation layers own directly: their affine scales and shifts.

    A normalisation layer is an instance of :data:`NORM_LAYERS` or a module whose class name ends in
    ``Norm``/``Norm1d``/``Norm2d``/``Norm3d`` (timm's ``RmsNorm``, ``RmsNorm2d``, ``SimpleNorm``).
    """
    out: set[str] = set()
    for prefix, m in module.named_modules():
        if isinstance(m, NORM_LAYERS) or _NORM_NAME.search(type(m).__name__):
            out.update(f"{prefix}.{n}" if prefix else n for n, _ in m.named_parameters(recurse=False))
    return out


class NormOnly(FreezeStrategy):
    """The head and the affine parameters (scale and shift) of every normalisation layer train.

    Frankle, Schwab & Morcos ("Training BatchNorm and Only BatchNorm: On the Expressive Power of
    Random Features in CNNs", ICLR 2021) found that training only BatchNorm's affine parameters of
    randomly initialised ResNets reaches far-above-chance accuracy; on pre-trained features it is a
    cheap fine-tuning baseline next to :class:`BitFit` (one scale and one shift per channel).
    Normalisation layers are found by type (:func:`norm_parameter_names`). BatchNorm layers of frozen
    groups stay in eval mode (running statistics fixed) unless ``FreezeSchedule(train_bn=True)``.

    Example::

        freeze = FreezeSchedule(NormOnly())   # or FreezeSchedule("norm_only")
    """

    name = "norm_only"

    def check(self, ctx: FreezeContext) -> None:
        if not self.params(ctx):
            raise ValueError(
                f"NormOnly found no normalisation-layer parameters below the head (groups "
                f"{list(ctx.groups[:-1])}); the strategy would be a linear probe: use 'linear_probe'."
            )

    def groups(self, ctx: FreezeContext) -> list[bool]:
        return ctx.top(1)

    def params(self, ctx: FreezeContext) -> set[str]:
        return norm_parameter_names(ctx.module) & set(ctx.below_head())
