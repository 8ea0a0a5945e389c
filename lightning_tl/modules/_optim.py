"""How the modules build their optimizers and learning-rate schedules: plain functions and one mixin.

The functions take a LightningModule, so a module composes them; :class:`WarmupCosineOptimizer` wires
them into ``configure_optimizers`` for the modules whose optimizer is "one optimizer over the trainable
parameters, per-step warm-up then cosine decay" (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg,
DINO, CLIP).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lightning_tl import distributed as dist
from lightning_tl.optim import OptimizerFactory, create_optimizer, param_groups, warmup_cosine_scheduler

#: timm optimizers that take a ``momentum`` argument.
MOMENTUM_OPTIMIZERS = frozenset({"sgd", "lars", "larc", "nesterov", "momentum"})


def check_optimizer_name(name: str) -> None:
    """Raise ``ValueError`` listing timm's optimizers unless ``name`` is one of them."""
    import timm.optim

    known = [str(n) for n in timm.optim.list_optimizers()]
    if name.lower() not in known:
        raise ValueError(f"Unknown optimizer {name!r}; timm knows: {', '.join(known)}.")


def timm_optimizer(
    groups: Iterable[dict[str, Any]], name: str, lr: float, weight_decay: float, momentum: float
) -> Optimizer:
    """timm's optimizer ``name`` over explicit param groups (a group's own ``lr`` / ``weight_decay`` win);
    ``momentum`` goes to the optimizers that take one."""
    import timm.optim

    kwargs: dict[str, Any] = {"momentum": momentum} if name.lower() in MOMENTUM_OPTIMIZERS else {}
    return timm.optim.create_optimizer_v2(list(groups), opt=name, lr=lr, weight_decay=weight_decay, **kwargs)


def build_optimizer(
    module: L.LightningModule,
    optimizer: str | OptimizerFactory,
    lr: float,
    weight_decay: float,
    momentum: float,
) -> Optimizer:
    """``optimizer`` (a timm name or a callable on param groups) over the trainable parameters of
    ``module``, without weight decay on 1-D ones; parameters with ``requires_grad=False`` (momentum
    encoders) are left out."""
    if callable(optimizer):
        return optimizer(param_groups(module, weight_decay))
    return create_optimizer(module, optimizer, lr, weight_decay, momentum)


def build_warmup_cosine(module: L.LightningModule, optimizer: Optimizer, warmup_epochs: float) -> LambdaLR:
    """Per-step linear warm-up of ``warmup_epochs`` (counted in optimizer steps) then cosine decay."""
    trainer = module.trainer
    total = int(trainer.estimated_stepping_batches)  # also sizes the train dataloader
    batches = trainer.num_training_batches
    if warmup_epochs > 0 and not math.isfinite(batches):
        raise ValueError("warmup_epochs needs a train dataloader with a length; set warmup_epochs: 0.")
    steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if warmup_epochs else 0
    return warmup_cosine_scheduler(optimizer, round(warmup_epochs * steps_per_epoch), total)


def global_batch_size(module: L.LightningModule) -> int | None:
    """Datamodule ``batch_size`` x processes x gradient accumulation, or None without a batch size."""
    trainer = module.trainer
    batch = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch is None:
        return None
    return int(batch) * dist.world_size() * trainer.accumulate_grad_batches


def scaled_lr(module: L.LightningModule, lr: float | None, per_256: float) -> float:
    """``lr`` if given, else ``per_256 x global batch / 256`` (the papers' linear scaling rule)."""
    if lr is not None:
        return float(lr)
    return per_256 * _global_batch_or_raise(module) / 256


def sqrt_scaled_lr(module: L.LightningModule, lr: float | None, per_sqrt: float) -> float:
    """``lr`` if given, else ``per_sqrt x sqrt(global batch)`` (SimCLR's square-root scaling)."""
    if lr is not None:
        return float(lr)
    return per_sqrt * math.sqrt(_global_batch_or_raise(module))


def _global_batch_or_raise(module: L.LightningModule) -> int:
    batch = global_batch_size(module)
    if batch is None:
        raise ValueError("lr=None needs a datamodule with batch_size to scale from; set lr explicitly.")
    return batch


class WarmupCosineOptimizer(L.LightningModule):
    """Mixin: ``configure_optimizers`` as :meth:`build_optimizer` then :meth:`build_scheduler` (per step).

    The module keeps its settings as attributes (``optimizer``, ``lr``, ``weight_decay``, ``momentum``,
    ``warmup_epochs``: :meth:`keep_optimizer_settings`) and overrides :meth:`base_lr` where ``lr=None``
    scales with the batch. The run length in optimizer steps is kept as ``_total_steps`` for the
    schedules that follow the optimizer step (momentum encoders, EMA teachers).
    """

    optimizer: str | OptimizerFactory
    lr: float | None
    weight_decay: float
    momentum: float
    warmup_epochs: float
    _total_steps: int | None = None

    def keep_optimizer_settings(
        self,
        optimizer: str | OptimizerFactory,
        lr: float | None,
        weight_decay: float,
        momentum: float,
        warmup_epochs: float,
    ) -> None:
        """Store what :meth:`configure_optimizers` reads (call it in ``__init__``)."""
        self.optimizer, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.momentum, self.warmup_epochs = momentum, warmup_epochs

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        scheduler = self.build_scheduler(optimizer)
        self._total_steps = int(self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_optimizer(self) -> Optimizer:
        """The optimizer over the trainable parameters (momentum copies have none), no weight decay on
        1-D ones."""
        return build_optimizer(self, self.optimizer, self.base_lr(), self.weight_decay, self.momentum)

    def build_scheduler(self, optimizer: Optimizer) -> Any:
        """Per-step linear warm-up then cosine decay over the whole run."""
        return build_warmup_cosine(self, optimizer, self.warmup_epochs)

    def base_lr(self) -> float:
        """The learning rate: ``lr`` (modules that scale ``lr=None`` with the batch override this)."""
        if self.lr is None:
            raise ValueError(f"{type(self).__name__} needs lr; got None.")
        return float(self.lr)
