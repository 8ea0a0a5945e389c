"""FreezeSchedule: which layers train when, with layer-wise learning rates, exact across resume.

The model is split into ordered layer groups (:mod:`lightning_tl.layer_groups`), the head last. A
strategy picks the groups that train from the start: ``"linear_probe"`` (only the head),
``"partial"`` (the last ``trainable_groups`` groups + head), ``"full"`` (everything, the pre-trained
weights as initialisation) or ``"auto"`` (:func:`choose_strategy`: ``"full"`` by default, from our
transfer tables; see there). ``unfreeze`` adds groups at epoch/step
milestones (gradual unfreezing, ULMFiT: Howard & Ruder 2018), each warmed up over ``warmup_steps``.

Optimizer contract: the optimizer is built from :meth:`FreezeSchedule.param_groups` (or
:func:`freeze_param_groups` inside ``configure_optimizers``), which returns one param group per
layer group and weight-decay class from the start, each at its layer-wise lr
``lr * lr_decay ** (distance from head)``. The groups never change, so any torch/timm/Lightning
scheduler works on them and no parameter appears twice. The callback checks this before training.
Schedulers own ``group["lr"]``; during every ``optimizer.step`` the callback multiplies it by 0 for
frozen groups and by the warm-up factor for newly unfrozen ones, then puts the scheduler's value
back, so chainable schedulers (``CosineAnnealingLR``, ``StepLR``) and closed-form ones
(``LambdaLR``, ``OneCycleLR``, timm) all keep their own trajectory and frozen groups never move.

Frozen groups have ``requires_grad=False`` (so a frozen prefix runs without building an autograd
graph: a linear-probe step costs about one forward pass) and their BatchNorm layers in eval mode
(running statistics unchanged) unless ``train_bn=True``.
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
from torch.optim import Optimizer
from typing_extensions import override

from lightning_tl.layer_groups import LayerGroup, assign, discover_groups, group_index, groups_from_patterns
from lightning_tl.optim import layerwise_param_groups

STRATEGIES = ("linear_probe", "partial", "full", "auto")
#: Minimum labelled images (``*_min_samples``) and images per class (``*_min_per_class``) for
#: ``"auto"`` to pick ``full`` (both ``full_*`` hold), else ``partial`` (both ``partial_*`` hold), else
#: ``linear_probe``. All 0 by default, i.e. ``"auto"`` picks ``full`` at every size: fitted to
#: BENCHMARKS.md's layer-freezing tables, where full fine-tuning had the best mean accuracy at every
#: measured size, 1 to 2,000 labels per class, near and far target (see :func:`choose_strategy`).
#: Override any of them with ``FreezeSchedule(auto_thresholds={...})`` to trade accuracy for a
#: cheaper step.
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
    below ~5,000 / 500, which these thresholds encoded before). In BENCHMARKS.md's layer-freezing
    tables, with each strategy's lr picked on a validation split (the protocol of Kornblith et al.,
    CVPR 2019), full fine-tuning had the best mean test accuracy at every size measured:

    - CPU, ``python -m benchmarks.run freeze_rule`` (quarter-width ResNet-18 pre-trained on
      Fashion-MNIST classes 0-4, test acc 0.905; 3 seeds; 1, 2, 5, 10, 20, 50, 100 labels per class):
      near target Fashion-MNIST 5-9, full 46.1 / 80.0 / 90.5 % at 1 / 5 / 100 labels per class, partial
      40.7 / 71.7 / 88.9, probe 37.6 / 57.6 / 77.8; far target scikit-learn digits, full 62.5 / 87.5 /
      97.5, partial 61.2 / 80.1 / 94.8, probe 49.8 / 65.1 / 74.6. Full beat the probe in all 42 paired
      seed comparisons and partial in 40 (a tie within noise only at 1 digit per class).
    - H100, ``benchmarks/transfer_gpu.py`` (ResNet-18, source test acc 0.952; Fashion-MNIST 5-9):
      2 labels per class (full 0.599, probe 0.539), 20 (0.885 / partial 0.875 / probe 0.765),
      200 (0.955 / 0.944 / 0.888) and 2,000 (0.968 / 0.959 / 0.908).

    What freezing buys there is cost, not accuracy: a probe step takes 0.30x and a partial step
    0.58x of a full step (ResNet-18, BENCHMARKS.md's step-time table). Raise the thresholds when
    compute decides, e.g. ``{"full_min_per_class": 50}`` (partial below 50 labels per class: 1-9
    points lower in the CPU table). Untested: fewer labelled images than classes, and source models
    much stronger than the target needs (large ImageNet models on natural images), where probes are
    reported to compete.
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


class FreezeSchedule(Callback):
    """Freeze layer groups by strategy, unfreeze them on a schedule, layer-wise lrs, exact resume.

    Args:
        strategy: ``"linear_probe"``, ``"partial"``, ``"full"`` or ``"auto"`` (:func:`choose_strategy`;
            with the default :data:`AUTO_THRESHOLDS` it picks ``"full"``, the measured winner).
        trainable_groups: for ``"partial"`` (also when ``"auto"`` picks it): backbone groups trained
            with the head.
        unfreeze: ``{milestone: what}`` with ``what`` an int (that many more groups, from the top down),
            ``"all"`` or a list of group names; milestones are epochs or optimizer steps (``interval``).
        interval: ``"epoch"`` or ``"step"``.
        groups: glob patterns over parameter names, input to output, head last (e.g.
            ``["encoder.0.*", "encoder.1.*", "*"]``); default: found from the module's ``backbone``.
        lr_decay: layer-wise decay: group lr = base lr * lr_decay ** (distance from head).
        warmup_steps: linear warm-up of a newly unfrozen group's lr over this many optimizer steps.
        train_bn: keep BatchNorm of frozen groups in train mode with trainable affine parameters.
        num_train_samples, num_classes: for ``"auto"``; default: read from the datamodule / module.
        auto_thresholds: overrides of :data:`AUTO_THRESHOLDS`, e.g. ``{"full_min_per_class": 50}``
            (``partial`` below 50 labels per class: cheaper steps, lower accuracy).

    Example::

        freeze = FreezeSchedule("linear_probe", unfreeze={2: 1, 4: "all"}, lr_decay=0.5)
        trainer = Trainer(max_epochs=6, callbacks=[freeze])
        # in the module: optimizer = torch.optim.SGD(freeze_param_groups(self, lr=0.1), momentum=0.9)
    """

    def __init__(
        self,
        strategy: str = "linear_probe",
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
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(map(repr, STRATEGIES))}.")
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
        self.resolved_strategy: str | None = None
        self.trainable: list[bool] = []
        self.unfrozen_at: dict[str, int] = {}  # group name -> global step it was unfrozen by the schedule
        self.applied: list[int] = []  # milestones already applied
        self._pending: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._hooks: list[Any] = []
        self._saved_lrs: list[float] = []
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
        body = len(groups) - 1
        if self.strategy in ("partial", "auto") and self.trainable_groups > body:
            raise ValueError(
                f"trainable_groups={self.trainable_groups} but the model has only {body} groups below "
                f"the head: {names[:-1]}; lower trainable_groups."
            )
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
        freezes = self.strategy != "full"
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
            self.resolved_strategy = state["strategy"]
            self.trainable = [n in state["trainable"] for n in names]
            self.unfrozen_at = dict(state["unfrozen_at"])
            self.applied = list(state["applied"])
            self._pending_lrs = dict(state["lrs"])
        else:
            self.resolved_strategy = self._resolve_strategy(trainer, pl_module)
            self.trainable = self._initial_trainable(self.resolved_strategy)
            self.unfrozen_at, self.applied = {}, []
        self._check_optimizers(trainer)
        self._remove_hooks()
        for optimizer in trainer.optimizers:
            self._hooks.append(optimizer.register_step_pre_hook(self._scale_lrs))
            self._hooks.append(optimizer.register_step_post_hook(self._restore_lrs))
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
        self._remove_hooks()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.resolved_strategy,
            "trainable": [g.name for g, t in zip(self.groups, self.trainable, strict=False) if t],
            "unfrozen_at": dict(self.unfrozen_at),
            "applied": list(self.applied),
            "lrs": self.effective_lrs(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    # ------------------------------------------------------------------ internals
    def _resolve_strategy(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        if self.strategy != "auto":
            return self.strategy
        samples, classes = self.num_train_samples, self.num_classes
        datamodule = getattr(trainer, "datamodule", None)
        if samples is None:
            if datamodule is not None and hasattr(datamodule, "labelled_dataset"):
                samples = len(datamodule.labelled_dataset("train"))
            elif hasattr(getattr(trainer, "train_dataloader", None), "dataset"):
                samples = len(trainer.train_dataloader.dataset)  # type: ignore[union-attr, arg-type]
        if classes is None:
            classes = getattr(datamodule, "num_classes", None) or pl_module.hparams.get("num_classes")
        if samples is None or classes is None:
            raise ValueError(
                f"strategy='auto' needs the number of training samples ({samples}) and classes ({classes}); "
                "pass FreezeSchedule(num_train_samples=..., num_classes=...)."
            )
        choice = choose_strategy(int(samples), int(classes), self.auto_thresholds)
        rank_zero_info(
            f"FreezeSchedule: strategy='auto' chose {choice!r} for {samples} samples, {classes} classes."
        )
        return choice

    def _initial_trainable(self, strategy: str) -> list[bool]:
        n = len(self.groups)
        first = {"linear_probe": n - 1, "partial": n - 1 - self.trainable_groups, "full": 0}[strategy]
        return [i >= first for i in range(n)]

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
        return min(1.0, (self._trainer.global_step - start + 1) / self.warmup_steps)

    def _scale_lrs(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._saved_lrs = [g["lr"] for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] * self._factor(g)

    def _restore_lrs(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        for g, lr in zip(optimizer.param_groups, self._saved_lrs, strict=True):
            g["lr"] = lr

    def effective_lrs(self) -> dict[str, float]:
        """Each layer group's lr in the next optimizer step: scheduler's value x (0 frozen, warm-up, 1)."""
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
        rank_zero_info(
            f"FreezeSchedule ({self.resolved_strategy}) at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}: training {groups}, {trainable:,} parameters; lrs {lrs}"
        )

    def _check_optimizers(self, trainer: pl.Trainer) -> None:
        owner = {}
        assert self._module is not None
        params = dict(self._module.named_parameters())
        for group, names in zip(self.groups, self._names, strict=True):
            for n in names:
                owner[id(params[n])] = group.name
        seen: set[int] = set()
        fix = (
            "Build the optimizer from the callback's param groups: in configure_optimizers, "
            "`torch.optim.SGD(freeze_param_groups(self, lr=0.1))` (from lightning_tl.callbacks.freezing) "
            "or `freeze.param_groups(self, lr=0.1)`."
        )
        for optimizer in trainer.optimizers:
            for g in optimizer.param_groups:
                for p in g["params"]:
                    if id(p) not in owner:
                        continue
                    if g.get("layer_group") != owner[id(p)]:
                        raise ValueError(
                            f"the optimizer's param groups are not FreezeSchedule's layer groups. {fix}"
                        )
                    if id(p) in seen:
                        raise ValueError(
                            f"a parameter of layer group {owner[id(p)]!r} is in the optimizer twice. {fix}"
                        )
                    seen.add(id(p))
        if len(seen) != len(owner):
            raise ValueError(
                f"{len(owner) - len(seen)} parameters of the model are in no optimizer param group. {fix}"
            )

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


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
