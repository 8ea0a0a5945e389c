"""The optimizer side of :class:`~lightning_tl.callbacks.FreezeSchedule`: layer-group param groups, step lrs.

:func:`check_layer_group_optimizers` verifies the contract: every parameter of the model in exactly
one param group, the one labelled with its layer group (as :func:`~lightning_tl.optim.layerwise_param_groups`
builds them). :class:`StepLrScaling` multiplies each param group's lr by a factor during
``optimizer.step`` only (0 for frozen groups, the warm-up factor for newly unfrozen ones) and puts
the scheduler's value back afterwards, so every scheduler keeps its own trajectory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch.optim import Optimizer

_FIX = (
    "Build the optimizer from the callback's param groups: in configure_optimizers, "
    "`torch.optim.SGD(freeze_param_groups(self, lr=0.1))` (from lightning_tl.callbacks.freezing) "
    "or `freeze.param_groups(self, lr=0.1)`."
)


def check_layer_group_optimizers(optimizers: Iterable[Optimizer], owner: dict[int, str]) -> None:
    """Raise ValueError unless the optimizers hold every parameter once, in a group of its layer group.

    Args:
        optimizers: the Trainer's optimizers.
        owner: ``id(parameter) -> layer group name`` for every parameter of the model; parameters
            the optimizers hold that are not in it (e.g. a loss's own) are not checked.
    """
    seen: set[int] = set()
    for optimizer in optimizers:
        for g in optimizer.param_groups:
            for p in g["params"]:
                if id(p) not in owner:
                    continue
                if g.get("layer_group") != owner[id(p)]:
                    raise ValueError(
                        f"the optimizer's param groups are not FreezeSchedule's layer groups. {_FIX}"
                    )
                if id(p) in seen:
                    raise ValueError(
                        f"a parameter of layer group {owner[id(p)]!r} is in the optimizer twice. {_FIX}"
                    )
                seen.add(id(p))
    if len(seen) != len(owner):
        raise ValueError(
            f"{len(owner) - len(seen)} parameters of the model are in no optimizer param group. {_FIX}"
        )


class StepLrScaling:
    """During each ``optimizer.step``, every param group's lr times ``factor(group)``; afterwards as before.

    The scheduler owns ``group["lr"]``: it only ever sees its own values, whatever the factors.
    """

    def __init__(self, factor: Callable[[dict[str, Any]], float]) -> None:
        self.factor = factor
        self._handles: list[Any] = []
        self._saved: list[float] = []

    def attach(self, optimizers: Iterable[Optimizer]) -> None:
        """Hook into ``optimizers`` (replacing any earlier hooks of this object)."""
        self.detach()
        for optimizer in optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._scale))
            self._handles.append(optimizer.register_step_post_hook(self._restore))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _scale(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._saved = [g["lr"] for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] * self.factor(g)

    def _restore(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        for g, lr in zip(optimizer.param_groups, self._saved, strict=True):
            g["lr"] = lr
