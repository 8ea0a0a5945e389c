"""FreezeSchedule: which layers train when, with layer-wise learning rates, exact across resume.

The model is split into ordered layer groups (:mod:`lightning_tl.layer_groups`), the head last. A
strategy object (:mod:`lightning_tl.callbacks.freeze_strategies`, by name through
:func:`~lightning_tl.callbacks.list_freeze_strategies`) picks what trains from the start: whole
groups (``"linear_probe"``: the head; ``"partial"``: the last ``trainable_groups`` groups + head;
``"full"``: everything; ``"auto"``: one of these by data size, :mod:`lightning_tl.callbacks.freeze_auto`)
and single parameters of frozen groups (``"bitfit"``: biases; ``"norm_only"``: normalisation
layers' scales and shifts). ``unfreeze`` adds groups at epoch/step milestones (gradual unfreezing,
ULMFiT: Howard & Ruder 2018), each warmed up over ``warmup_steps``.

Optimizer contract: the optimizer is built from :meth:`FreezeSchedule.param_groups` (or
:func:`freeze_param_groups` inside ``configure_optimizers``), which returns one param group per
layer group and weight-decay class from the start, each at its layer-wise lr
``lr * lr_decay ** (distance from head)``. The groups never change, so any torch/timm/Lightning
scheduler works on them and no parameter appears twice. The callback checks this before training.
Schedulers own ``group["lr"]``; during every ``optimizer.step`` the callback multiplies it by 0 for
frozen groups and by the warm-up factor for newly unfrozen ones (not for param groups holding
parameters the strategy trained from the start, such as BitFit's biases), then puts the scheduler's
value back (:mod:`lightning_tl.callbacks._freeze_optimizer`), so chainable schedulers
(``CosineAnnealingLR``, ``StepLR``) and closed-form ones (``LambdaLR``, ``OneCycleLR``, timm) all
keep their own trajectory and frozen groups never move.

Frozen parameters have ``requires_grad=False`` (so a frozen prefix runs without building an autograd
graph: a linear-probe step costs about one forward pass; BENCHMARKS.md, "Layer freezing: step time
and memory") and the BatchNorm layers of frozen groups are in eval mode (running statistics
unchanged) unless ``train_bn=True``.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from typing_extensions import override

from lightning_tl.callbacks._freeze_optimizer import StepLrScaling, check_layer_group_optimizers
from lightning_tl.callbacks._freeze_registry import create_freeze_strategy
from lightning_tl.callbacks.freeze_auto import AUTO_THRESHOLDS, check_thresholds, choose_strategy
from lightning_tl.callbacks.freeze_strategies import FreezeContext, FreezeStrategy
from lightning_tl.layer_groups import LayerGroup, assign, discover_groups, group_index, groups_from_patterns
from lightning_tl.optim import layerwise_param_groups

__all__ = [
    "AUTO_THRESHOLDS",  # re-exported: the rule lives in freeze_auto.py
    "FreezeSchedule",
    "check_thresholds",
    "choose_strategy",
    "find_freeze_schedule",
    "freeze_param_groups",
]


class FreezeSchedule(Callback):
    """Freeze layer groups by strategy, unfreeze them on a schedule, layer-wise lrs, exact resume.

    Args:
        strategy: what trains from the start: a registered name (``"linear_probe"``, ``"partial"``,
            ``"full"``, ``"auto"``, ``"bitfit"``, ``"norm_only"`` or one added with
            :func:`~lightning_tl.callbacks.register_freeze_strategy`) or a
            :class:`~lightning_tl.callbacks.freeze_strategies.FreezeStrategy` instance (in YAML:
            ``class_path``/``init_args``). ``"auto"`` (:func:`choose_strategy`) picks ``"full"`` with
            the default :data:`AUTO_THRESHOLDS`, the measured winner (BENCHMARKS.md, "Layer freezing").
        trainable_groups: for ``"partial"`` (also when ``"auto"`` picks it): backbone groups trained
            with the head.
        unfreeze: ``{milestone: what}`` with ``what`` an int (that many more groups, from the top down),
            ``"all"`` or a list of group names; milestones are epochs or optimizer steps (``interval``).
        interval: ``"epoch"`` or ``"step"``.
        groups: glob patterns over parameter names, input to output, head last (e.g.
            ``["encoder.0.*", "encoder.1.*", "*"]``); default: found from the module's ``backbone``.
        lr_decay: layer-wise decay: group lr = base lr * lr_decay ** (distance from head).
        warmup_steps: linear warm-up of a newly unfrozen group's lr over this many optimizer steps
            (param groups with parameters that trained from the start keep their lr: the strategy's, and
            BatchNorm's under ``train_bn``).
        train_bn: keep BatchNorm of frozen groups in train mode with trainable affine parameters.
            Otherwise their running statistics stay fixed, also when a strategy trains their affine
            parameters (``"bitfit"``, ``"norm_only"``).
        num_train_samples, num_classes: for ``"auto"``; default: read from the datamodule / module.
        auto_thresholds: overrides of :data:`AUTO_THRESHOLDS`, e.g. ``{"full_min_per_class": 50}``
            (``partial`` below 50 labels per class: cheaper steps, lower accuracy).

    Example::

        freeze = FreezeSchedule("linear_probe", unfreeze={2: 1, 4: "all"}, lr_decay=0.5)
        trainer = Trainer(max_epochs=6, callbacks=[freeze])
        # or: FreezeSchedule(BitFit()), FreezeSchedule("norm_only", unfreeze={3: "all"})
        # in the module: optimizer = torch.optim.SGD(freeze_param_groups(self, lr=0.1), momentum=0.9)
    """

    def __init__(
        self,
        strategy: str | FreezeStrategy = "linear_probe",
        trainable_groups: int = 1,
        unfreeze: dict[int, int | str | list[str]] | None = None,
        interval: str = "epoch",
        groups: list[str | list[str]] | None = None,
        lr_decay: float = 1.0,
        warmup_steps: int = 0,
        train_bn: bool = False,
        num_train_samples: int | None = None,
        num_classes: int | None = None,
        auto_thresholds: dict[str, int] | None = None,
    ) -> None:
        if isinstance(strategy, str):
            strategy_object = create_freeze_strategy(strategy)
        elif isinstance(strategy, FreezeStrategy):
            strategy_object = strategy
        else:
            raise ValueError(
                "strategy must be a strategy name or a FreezeStrategy instance, got "
                f"{type(strategy).__name__} {strategy!r}."
            )
        if trainable_groups < 1:
            raise ValueError(
                f"trainable_groups must be >= 1 (backbone groups 'partial' trains), got {trainable_groups}."
            )
        if interval not in ("epoch", "step"):
            raise ValueError(
                f"interval must be 'epoch' or 'step' (what unfreeze milestones count), got {interval!r}."
            )
        if not 0 < lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1] (1 = one lr for all groups), got {lr_decay}.")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        thresholds = check_thresholds(auto_thresholds)
        for milestone, what in (unfreeze or {}).items():
            if milestone < 0:
                raise ValueError(f"unfreeze milestones must be >= 0, got {milestone}.")
            if not ((isinstance(what, int) and what >= 1) or what == "all" or isinstance(what, list)):
                raise ValueError(
                    f"unfreeze[{milestone}] = {what!r}: use a number of groups >= 1, 'all' or a list "
                    "of group names."
                )
        self.strategy = strategy
        self._strategy = strategy_object
        self.trainable_groups = trainable_groups
        self.unfreeze = dict(sorted((unfreeze or {}).items()))
        self.interval = interval
        self.group_patterns = groups
        self.lr_decay = lr_decay
        self.warmup_steps = warmup_steps
        self.train_bn = train_bn
        self.num_train_samples = num_train_samples
        self.num_classes = num_classes
        self.auto_thresholds = thresholds
        self.history: list[dict[str, Any]] = []  # one entry per change of the trainable set
        self.groups: list[LayerGroup] = []
        self._names: list[list[str]] = []
        self._module: nn.Module | None = None
        self._bn: list[tuple[_BatchNorm, int]] = []
        self._bn_ids: set[int] = set()
        self.resolved_strategy: str | None = None
        self.trainable: list[bool] = []  # per layer group: trains as a whole
        self.extra_params: list[str] = []  # parameters of frozen groups the strategy trains (BitFit's biases)
        self._extra_ids: set[int] = set()
        self.unfrozen_at: dict[str, int] = {}  # group name -> global step it was unfrozen by the schedule
        self.applied: list[int] = []  # milestones already applied
        self._pending: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._lr_scaling = StepLrScaling(self._factor)
        self._pending_lrs: dict[str, float] | None = None

    # ------------------------------------------------------------------ groups and param groups
    def resolve_groups(self, module: nn.Module) -> list[LayerGroup]:
        """Find (once per module) the layer groups and which parameter names each holds."""
        if self._module is module:
            return self.groups
        groups = groups_from_patterns(self.group_patterns) if self.group_patterns else discover_groups(module)
        if len(groups) < 2:
            raise ValueError(
                f"need at least two layer groups (a body and a head), got {[g.name for g in groups]}."
            )
        self._names = assign([n for n, _ in module.named_parameters()], groups)
        self.groups, self._module = groups, module
        self._bn = []
        for name, m in module.named_modules():
            if isinstance(m, _BatchNorm):
                state = [n for n, _ in m.named_parameters(recurse=False)] + [
                    n for n, _ in m.named_buffers(recurse=False)
                ]
                index = group_index(f"{name}.{state[0]}", groups) if state else None
                if index is not None:
                    self._bn.append((m, index))
        self._bn_ids = {id(p) for bn, _ in self._bn for p in bn.parameters(recurse=False)}
        return groups

    def param_groups(self, module: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Every layer group's param groups at its layer-wise lr; build the optimizer from these."""
        groups = self.resolve_groups(module)
        params = dict(module.named_parameters())
        pairs = [(g.name, [params[n] for n in names]) for g, names in zip(groups, self._names, strict=True)]
        return layerwise_param_groups(pairs, lr, self.lr_decay, weight_decay)

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        groups = self.resolve_groups(pl_module)
        names = [g.name for g in groups]
        self._strategy.check(self._context(trainer))
        for milestone, what in self.unfreeze.items():
            if isinstance(what, list) and (bad := [w for w in what if w not in names]):
                raise ValueError(f"unfreeze[{milestone}] names unknown groups {bad}; the groups are {names}.")
        last = max(self.unfreeze, default=None)
        limit = trainer.max_epochs if self.interval == "epoch" else trainer.max_steps
        if last is not None and limit is not None and limit >= 0 and last >= limit:
            warnings.warn(
                f"unfreeze milestone {last} is never reached: the run stops after {limit} {self.interval}s "
                f"(max_{self.interval}s={limit}); raise it or move the milestone.",
                stacklevel=2,
            )
        ddp_kwargs = getattr(trainer.strategy, "_ddp_kwargs", {})
        freezes = self._strategy.freezes
        if (
            freezes
            and isinstance(trainer.strategy, DDPStrategy)
            and not ddp_kwargs.get("find_unused_parameters")
        ):
            raise ValueError(
                "FreezeSchedule under DDP leaves frozen parameters without gradients; use "
                "strategy='ddp_find_unused_parameters_true' (DDPStrategy(find_unused_parameters=True))."
            )
        # DDP registers only parameters that require grad when it wraps the model (right after this
        # hook): all must, so that groups unfrozen later are synchronised. Freezing starts on_train_start.
        for p in pl_module.parameters():
            p.requires_grad_(True)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        self.resolve_groups(pl_module)
        names = [g.name for g in self.groups]
        if self._pending is not None:  # resuming: the checkpoint's state, not a fresh decision
            state, self._pending = self._pending, None
            if bad := [n for n in state["trainable"] if n not in names]:
                raise ValueError(
                    f"checkpoint's FreezeSchedule state names groups {bad} this model lacks ({names})."
                )
            params = dict(pl_module.named_parameters())
            if bad := [n for n in state.get("params", []) if n not in params]:
                raise ValueError(
                    f"checkpoint's FreezeSchedule state trains parameters {bad[:4]} this model lacks."
                )
            self.resolved_strategy = state["strategy"]
            self.trainable = [n in state["trainable"] for n in names]
            self._set_extra(state.get("params", []))
            self.unfrozen_at = dict(state["unfrozen_at"])
            self.applied = list(state["applied"])
            self._pending_lrs = dict(state["lrs"])
        else:
            self._start(trainer)
            self.unfrozen_at, self.applied = {}, []
        self._check_optimizers(trainer)
        self._lr_scaling.attach(trainer.optimizers)
        if self._pending_lrs is not None:  # the optimizer/scheduler state must give the saved lrs back
            self._apply()
            if (now := self.effective_lrs()) != self._pending_lrs:
                warnings.warn(
                    f"after resume the layer groups' lrs are {now}, but the checkpoint's FreezeSchedule "
                    f"saved {self._pending_lrs}: the optimizer or scheduler state was not restored as saved.",
                    stacklevel=2,
                )
            self._pending_lrs = None
        self._due_milestones(trainer)
        self._apply()
        self._record(trainer)

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        changed = self._due_milestones(trainer)
        self._apply()  # also re-applies BN eval modes that Lightning's train() calls may have undone
        if changed:
            self._record(trainer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lr_scaling.detach()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.resolved_strategy,
            "trainable": [g.name for g, t in zip(self.groups, self.trainable, strict=False) if t],
            "params": list(self.extra_params),
            "unfrozen_at": dict(self.unfrozen_at),
            "applied": list(self.applied),
            "lrs": self.effective_lrs(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    # ------------------------------------------------------------------ internals
    def _context(self, trainer: pl.Trainer | None) -> FreezeContext:
        assert self._module is not None
        return FreezeContext(
            module=self._module,
            groups=tuple(g.name for g in self.groups),
            members=tuple(tuple(names) for names in self._names),
            trainable_groups=self.trainable_groups,
            trainer=trainer,
            num_train_samples=self.num_train_samples,
            num_classes=self.num_classes,
            auto_thresholds=self.auto_thresholds,
        )

    def _start(self, trainer: pl.Trainer) -> None:
        """The strategy's initial choice: whole groups, and single parameters of frozen groups."""
        ctx = self._context(trainer)
        strategy = self._strategy.resolve(ctx)
        flags = [bool(f) for f in strategy.groups(ctx)]
        if len(flags) != len(self.groups):
            raise ValueError(
                f"strategy {strategy.name!r} returned {len(flags)} group flags for {len(self.groups)} layer "
                f"groups {list(ctx.groups)}."
            )
        known = {n for names in ctx.members for n in names}
        chosen = set(strategy.params(ctx))
        if unknown := sorted(chosen - known):
            raise ValueError(f"strategy {strategy.name!r} chose parameters the model lacks: {unknown[:4]}.")
        frozen = {n for names, f in zip(ctx.members, flags, strict=True) if not f for n in names}
        if not any(flags) and not chosen & frozen:
            raise ValueError(
                f"strategy {strategy.name!r} trains no parameter; it must choose a group or a parameter."
            )
        self.resolved_strategy = strategy.name
        self.trainable = flags
        self._set_extra(sorted(chosen & frozen))

    def _set_extra(self, names: list[str]) -> None:
        assert self._module is not None
        params = dict(self._module.named_parameters())
        self.extra_params = list(names)
        self._extra_ids = {id(params[n]) for n in names}

    def _due_milestones(self, trainer: pl.Trainer) -> bool:
        now = trainer.current_epoch if self.interval == "epoch" else trainer.global_step
        changed = False
        for milestone, what in self.unfreeze.items():
            if milestone > now or milestone in self.applied:
                continue
            self.applied.append(milestone)
            frozen = [i for i, t in enumerate(self.trainable) if not t]
            if what == "all":
                chosen = frozen
            elif isinstance(what, int):
                chosen = frozen[-what:]
            else:
                chosen = [i for i, g in enumerate(self.groups) if g.name in what and not self.trainable[i]]
            for i in chosen:
                self.trainable[i] = True
                self.unfrozen_at[self.groups[i].name] = trainer.global_step
                changed = True
        return changed

    def _apply(self) -> None:
        assert self._module is not None
        params = dict(self._module.named_parameters())
        for names, trainable in zip(self._names, self.trainable, strict=True):
            for n in names:
                params[n].requires_grad_(trainable)
        for n in self.extra_params:
            params[n].requires_grad_(True)
        for bn, index in self._bn:
            keep_training = self.trainable[index] or self.train_bn
            bn.train(keep_training and self._module.training)
            if self.train_bn:
                for p in bn.parameters(recurse=False):
                    p.requires_grad_(True)

    def _factor(self, group: dict[str, Any]) -> float:
        if not any(p.requires_grad for p in group["params"]):
            return 0.0
        start = self.unfrozen_at.get(group.get("layer_group", ""))
        if start is None or self.warmup_steps == 0 or self._trainer is None:
            return 1.0
        always = self._always_trained()
        if any(id(p) in always for p in group["params"]):
            # trained from the start (BitFit's biases, BatchNorm under train_bn): no second warm-up when
            # the group unfreezes
            return 1.0
        return min(1.0, (self._trainer.global_step - start + 1) / self.warmup_steps)

    def _always_trained(self) -> set[int]:
        """Ids of the parameters of frozen groups that train all along: the strategy's extra ones and, with
        ``train_bn``, the BatchNorm affine parameters."""
        return self._extra_ids | self._bn_ids if self.train_bn else self._extra_ids

    def effective_lrs(self) -> dict[str, float]:
        """Each layer group's lr in the next optimizer step: scheduler's value x (0 frozen, warm-up, 1).

        The lr of the group's first param group (its weights): a frozen group whose biases train
        (``"bitfit"``) reports 0 here while its biases step at the layer-wise lr.
        """
        if self._trainer is None:
            return {}
        out: dict[str, float] = {}
        for optimizer in self._trainer.optimizers:
            for g in optimizer.param_groups:
                if "layer_group" in g:
                    out.setdefault(g["layer_group"], float(g["lr"]) * self._factor(g))
        return out

    def num_trainable(self) -> int:
        assert self._module is not None
        return sum(p.numel() for p in self._module.parameters() if p.requires_grad)

    def _record(self, trainer: pl.Trainer) -> None:
        trainable = self.num_trainable()
        lrs = self.effective_lrs()
        entry = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "trainable_params": trainable,
            "lrs": lrs,
        }
        self.history.append(entry)
        metrics = {
            "freeze/trainable_params": float(trainable),
            **{f"freeze/lr/{k}": v for k, v in lrs.items()},
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        groups = [g.name for g, t in zip(self.groups, self.trainable, strict=True) if t]
        params = [n for n in self.extra_params if not self.trainable[self._group_of(n)]]
        extra = f" + {len(params)} parameter tensors of frozen groups" if params else ""
        rank_zero_info(
            f"FreezeSchedule ({self.resolved_strategy}) at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}: training {groups}{extra}, {trainable:,} parameters; lrs {lrs}"
        )

    def _group_of(self, name: str) -> int:
        return next(i for i, names in enumerate(self._names) if name in names)

    def _check_optimizers(self, trainer: pl.Trainer) -> None:
        assert self._module is not None
        params = dict(self._module.named_parameters())
        owner = {
            id(params[n]): g.name for g, names in zip(self.groups, self._names, strict=True) for n in names
        }
        check_layer_group_optimizers(trainer.optimizers, owner)


def freeze_param_groups(
    module: pl.LightningModule, lr: float, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Param groups from the :class:`FreezeSchedule` among ``module.trainer``'s callbacks.

    Call it in ``configure_optimizers``: ``torch.optim.SGD(freeze_param_groups(self, lr=0.1))``.
    """
    found = find_freeze_schedule(module)
    if found is None:
        raise ValueError(
            "no FreezeSchedule among the trainer's callbacks; add one: "
            "Trainer(callbacks=[FreezeSchedule(...)])."
        )
    return found.param_groups(module, lr, weight_decay)


def find_freeze_schedule(module: pl.LightningModule) -> FreezeSchedule | None:
    """The trainer's :class:`FreezeSchedule`, or None (also when the module has no trainer)."""
    trainer: Any = module._trainer
    callbacks = trainer.callbacks if trainer is not None else []
    found = [c for c in callbacks if isinstance(c, FreezeSchedule)]
    if len(found) > 1:
        raise ValueError(f"{len(found)} FreezeSchedule callbacks on one trainer; use one.")
    return found[0] if found else None
