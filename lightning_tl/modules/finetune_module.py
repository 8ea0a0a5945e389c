"""The base of the supervised transfer modules: the optimizer arguments they share.

:class:`~lightning_tl.modules.ImageClassifier` (fine-tuning with a new head) and
:class:`~lightning_tl.modules.AdapterResNet` (residual adapters on a frozen backbone) take their own
arguments and pass the rest (``**kwargs``) to :class:`FineTuneModule`, which checks the optimizer
settings and passes the backbone's on to :class:`~lightning_tl.modules.BackboneModule`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from lightning_tl.modules._optim import WarmupCosineOptimizer, check_optimizer_name
from lightning_tl.modules._pretrained import warn_random_backbone
from lightning_tl.modules.backbone_module import BackboneModule


class FineTuneModule(WarmupCosineOptimizer, BackboneModule):
    """A (pre-trained) backbone trained on labels with one optimizer, per-step warm-up then cosine decay.

    A subclass takes its own arguments (keyword-only) and passes the rest here, then builds its head(s)
    on ``self.backbone`` (``self.backbone.num_features`` wide). ``random_backbone`` words the warning
    for ``pretrained=None`` (what is random, and what the module would do with weights).

    Args:
        optimizer: a timm optimizer name (``"sgd"``, ``"adamw"``, ``"lars"``...).
        lr: base learning rate (> 0).
        weight_decay: on weights with ndim >= 2 only.
        momentum: for SGD-type optimizers.
        warmup_epochs: linear warm-up before a per-step cosine decay to 0; may be fractional.
        **kwargs: the backbone (``backbone``, ``backbone_kwargs``, ``pretrained``, ``small_input``,
            ``in_channels``): see :class:`~lightning_tl.modules.BackboneModule`. ``pretrained=None``
            with a backbone name warns: fine-tuning a random backbone is rarely what you want.
    """

    optimizer: str
    random_backbone: ClassVar[tuple[str, str]] = ("backbone", "fine-tune")

    def __init__(
        self,
        optimizer: str = "sgd",
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        warmup_epochs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        if not warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        check_optimizer_name(optimizer)  # a typo fails here, not at the first configure_optimizers
        super().__init__(**kwargs)
        self.keep_optimizer_settings(optimizer, lr, weight_decay, momentum, warmup_epochs)
        if kwargs.get("pretrained") is None and not isinstance(kwargs.get("backbone"), nn.Module):
            warn_random_backbone(type(self).__name__, *self.random_backbone, stacklevel=4)
