"""Optimizers and learning-rate schedules: pure, reusable pieces on top of timm.

* :func:`param_groups` puts 1-D parameters (biases, norm scales) in a group without weight decay.
* :func:`create_optimizer` builds any timm optimizer (``"lars"``, ``"sgd"``, ``"adamw"``, ``"lamb"``...)
  from those groups; timm's LARS skips the trust-ratio adaptation for groups without weight decay,
  as the SimCLR paper does for biases and batch-norm parameters.
* :func:`warmup_cosine` / :func:`warmup_cosine_scheduler`: linear warm-up then cosine decay, per step.
* :func:`layerwise_param_groups`: one lr per layer group, ``lr * decay ** (distance from the head)``.
* :class:`ParamGroupProvider` / :func:`provided_param_groups`: a trainer callback that owns the
  optimizer's grouping (``FreezeSchedule``'s layer groups) hands it to a module that knows only this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters: ``p.ndim >= 2`` get ``weight_decay``, biases and norms get none."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_optimizer(
    module: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, **kwargs: Any
) -> Optimizer:
    """A timm optimizer named ``name`` over :func:`param_groups` of ``module``.

    Raises:
        ValueError: unknown optimizer name (the valid ones are listed) or ``lr <= 0``.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    import timm.optim

    known = [str(n) for n in timm.optim.list_optimizers()]
    if name.lower() not in known:
        raise ValueError(f"Unknown optimizer {name!r}; timm knows: {', '.join(known)}.")
    if name.lower() in {"sgd", "lars", "larc", "nesterov", "momentum"}:
        kwargs["momentum"] = momentum
    return timm.optim.create_optimizer_v2(
        param_groups(module, weight_decay), opt=name, lr=lr, weight_decay=weight_decay, **kwargs
    )


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine decay to ``min_ratio``.

    ``(step + 1) / warmup_steps`` during warm-up (so the first step already moves), then
    ``min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * t))`` with t going 0 -> 1 over the remaining steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class _WarmupCosine:
    """Picklable lambda for :class:`LambdaLR` (plain closures cannot be pickled with DDP spawn)."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_ratio)


def warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    """A per-step :class:`LambdaLR` following :func:`warmup_cosine` for every param group."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps} and {total_steps}."
        )
    return LambdaLR(optimizer, _WarmupCosine(warmup_steps, total_steps, min_ratio))


def layerwise_param_groups(
    groups: list[tuple[str, list[nn.Parameter]]],
    lr: float,
    decay: float = 1.0,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Param groups with layer-wise learning rates: ``lr * decay ** (distance from the head)``.

    ``groups`` are ``(name, parameters)`` ordered from input to output, the head last (distance 0;
    the group below it distance 1, ...), as in ULMFiT's discriminative fine-tuning (Howard & Ruder
    2018) and BEiT/ELECTRA's layer-wise decay. Each layer group gives up to two param groups:
    ``ndim >= 2`` parameters with ``weight_decay``, biases and norms without. Every parameter is
    included whether or not it requires grad, so the optimizer's groups never change during training.
    Each dict carries ``layer_group`` (the name) and ``lr_scale`` (``decay ** distance``).

    Raises:
        ValueError: ``lr <= 0``, ``decay`` outside (0, 1], or a parameter listed twice.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1] (1 = the same lr everywhere), got {decay}.")
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for index, (name, params) in enumerate(groups):
        scale = decay ** (len(groups) - 1 - index)
        for p in params:
            if id(p) in seen:
                raise ValueError(f"a parameter of layer group {name!r} is also in an earlier group.")
            seen.add(id(p))
        for wd, members in (
            (weight_decay, [p for p in params if p.ndim >= 2]),
            (0.0, [p for p in params if p.ndim < 2]),
        ):
            if members:
                out.append(
                    {
                        "params": members,
                        "lr": lr * scale,
                        "weight_decay": wd,
                        "layer_group": name,
                        "lr_scale": scale,
                    }
                )
    return out


@runtime_checkable
class ParamGroupProvider(Protocol):
    """A trainer callback that decides how a module's parameters are grouped for the optimizer.

    :class:`~lightning_tl.callbacks.FreezeSchedule` is one: its groups are the layer groups, each at
    its layer-wise lr, which it then freezes and unfreezes. Our modules find a provider by this method
    (duck typing, :func:`provided_param_groups`), so they need not import any callback.
    """

    def param_groups(self, module: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """The optimizer's param groups for ``module`` at base ``lr``; weight decay on ``ndim >= 2`` only."""
        ...


def provided_param_groups(
    module: nn.Module, lr: float, weight_decay: float = 0.0
) -> list[dict[str, Any]] | None:
    """Param groups from the :class:`ParamGroupProvider` among ``module``'s trainer callbacks, or None.

    None when the module has no trainer or no callback provides groups; then build the groups yourself
    (e.g. :func:`param_groups`).

    Raises:
        ValueError: more than one callback provides param groups (which one to follow is ambiguous).
    """
    trainer = getattr(module, "_trainer", None)
    callbacks = getattr(trainer, "callbacks", None) or []
    found = [c for c in callbacks if isinstance(c, ParamGroupProvider) and callable(c.param_groups)]
    if len(found) > 1:
        names = [type(c).__name__ for c in found]
        raise ValueError(f"{len(found)} callbacks provide the optimizer's param groups ({names}); keep one.")
    return found[0].param_groups(module, lr, weight_decay) if found else None
