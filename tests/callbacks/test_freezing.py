"""FreezeSchedule: exact freezing, schedules, layer-wise lrs, schedulers, exact resume, bad input."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from _freeze_models import UserNet, bn_modules, loader, trainer_kwargs
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn

from lightning_tl.callbacks import FreezeSchedule
from lightning_tl.callbacks.freezing import AUTO_THRESHOLDS, choose_strategy
from lightning_tl.modules import ImageClassifier
from lightning_tl.optim import layerwise_param_groups

GROUPS = ["backbone.0", "backbone.1", "backbone.2", "head"]


def group_state(model: nn.Module, group: str) -> dict[str, Tensor]:
    """Parameters and buffers (BN running stats, num_batches_tracked) of a layer group, cloned."""
    prefix = "" if group == "head" else group + "."
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix or "head.")}


class Recorder(Callback):
    """Per training step: trainable groups, BN modes, the lrs the optimizer really used, the loss."""

    def __init__(self) -> None:
        self.trainable: list[list[bool]] = []
        self.bn_training: list[list[bool]] = []
        self.step_lrs: list[list[float]] = []
        self.grads_none: list[dict[str, bool]] = []

    def on_train_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        # registered after FreezeSchedule's hook (it is earlier in the callback list): sees the scaled lrs
        trainer.optimizers[0].register_step_pre_hook(
            lambda opt, *_: self.step_lrs.append([g["lr"] for g in opt.param_groups])
        )

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.trainable.append([p.requires_grad for p in (pl_module.backbone[0][0].weight,)])
        self.bn_training.append([m.training for m in bn_modules(pl_module)])

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: Any, optimizer: Any) -> None:
        self.grads_none.append({n: p.grad is None for n, p in pl_module.named_parameters()})


def fit(model: pl.LightningModule, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    trainer = Trainer(**trainer_kwargs(callbacks=callbacks, **kwargs))
    trainer.fit(model, loader())
    return trainer


@pytest.mark.parametrize(
    ("strategy", "k", "frozen"),
    [
        ("linear_probe", 1, GROUPS[:3]),
        ("partial", 1, GROUPS[:2]),
        ("partial", 2, GROUPS[:1]),
        ("full", 1, []),
    ],
)
def test_strategy_freezes_exactly_the_expected_groups(strategy: str, k: int, frozen: list[str]) -> None:
    model = UserNet()
    before = {g: group_state(model, g) for g in GROUPS}
    freeze, rec = FreezeSchedule(strategy, trainable_groups=k), Recorder()
    fit(model, [freeze, rec], max_steps=3)
    assert [g.name for g in freeze.groups] == GROUPS
    for group in GROUPS:
        after = group_state(model, group)
        params = [p for n, p in model.named_parameters() if n.startswith(group + ".")]
        if group in frozen:  # weights AND BN running stats bit-identical; no grads ever
            assert all(torch.equal(after[n], before[group][n]) for n in after), group
            assert all(not p.requires_grad for p in params)
            assert all(all(g[n] for n in g if n.startswith(group + ".")) for g in rec.grads_none)
        else:
            assert all(not torch.equal(after[n], before[group][n]) for n in after if "weight" in n), group
            assert all(p.requires_grad for p in params)
    bn_groups = [0, 1, 2]  # BN i sits in backbone.i
    assert rec.bn_training[-1] == [f"backbone.{i}" not in frozen for i in bn_groups]


def test_frozen_prefix_builds_no_autograd_graph() -> None:
    model = UserNet()
    seen: list[bool] = []
    model.backbone.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    fit(model, [FreezeSchedule("linear_probe")], max_steps=2)
    assert seen == [False, False]  # the backbone's output carries no graph: backward stops at the head


def test_train_bn_keeps_batch_norm_training() -> None:
    model = UserNet()
    bn0 = model.backbone[0][1]
    stats, weight = bn0.running_mean.clone(), bn0.weight.clone()
    conv0 = model.backbone[0][0].weight.clone()
    fit(model, [FreezeSchedule("linear_probe", train_bn=True)], max_steps=2)
    assert not torch.equal(bn0.running_mean, stats) and not torch.equal(bn0.weight, weight)
    assert torch.equal(model.backbone[0][0].weight, conv0)


def test_image_classifier_resnet_groups_and_linear_probe(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = ImageClassifier("resnet18", small_input=True, in_channels=1, num_classes=4, lr=0.1)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    freeze = FreezeSchedule("linear_probe")
    fit(model, [freeze], max_steps=2)
    names = [g.name for g in freeze.groups]
    assert names == [f"backbone.model.{s}" for s in ("stem", "layer1", "layer2", "layer3", "layer4")] + [
        "head"
    ]
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_gradual_unfreezing_switches_at_the_right_epoch() -> None:
    model, rec = UserNet(), Recorder()
    freeze = FreezeSchedule("linear_probe", unfreeze={1: 1, 2: "all"})
    fit(model, [freeze, rec], max_epochs=3)  # 4 steps per epoch
    expected = [[False, False, False, True]] * 4 + [[False, False, True, True]] * 4 + [[True] * 4] * 4
    assert [h["step"] for h in freeze.history] == [0, 4, 8]
    trainable = [[lr > 0 for lr in lrs[::2]] for lrs in rec.step_lrs]
    assert trainable == expected
    assert [bn[0] for bn in rec.bn_training] == [False] * 8 + [True] * 4


def test_gradual_unfreezing_by_step_and_by_name_is_logged(tmp_path: Path) -> None:
    model, rec = UserNet(), Recorder()
    freeze = FreezeSchedule("linear_probe", unfreeze={3: 1, 5: ["backbone.0"]}, interval="step")
    fit(model, [freeze, rec], max_steps=7, max_epochs=2, logger=CSVLogger(tmp_path, name="", version=""))
    assert [h["step"] for h in freeze.history] == [0, 3, 5]
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["freeze/trainable_params"]]
    assert [int(r["step"]) for r in rows] == [0, 3, 5]
    assert [float(r["freeze/trainable_params"]) for r in rows] == [
        h["trainable_params"] for h in freeze.history
    ]
    assert [float(r["freeze/lr/backbone.2"]) for r in rows] == [0.0, 0.1, 0.1]
    assert [t[0] for t in rec.trainable] == [False] * 5 + [True] * 2
    assert freeze.trainable == [True, False, True, True]  # by name: backbone.0, not backbone.1


def test_layerwise_param_groups_formula_and_weight_decay() -> None:
    a, b, c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)
    groups = layerwise_param_groups(
        [("a", list(a.parameters())), ("b", list(b.parameters())), ("c", list(c.parameters()))],
        lr=0.4,
        decay=0.5,
        weight_decay=0.1,
    )
    got = [(g["layer_group"], g["lr"], g["weight_decay"], [p.ndim for p in g["params"]]) for g in groups]
    assert got == [
        ("a", 0.1, 0.1, [2]),
        ("a", 0.1, 0.0, [1]),
        ("b", 0.2, 0.1, [2]),
        ("b", 0.2, 0.0, [1]),
        ("c", 0.4, 0.1, [2]),
        ("c", 0.4, 0.0, [1]),
    ]
    with pytest.raises(ValueError, match="also in an earlier group"):
        layerwise_param_groups([("a", list(a.parameters())), ("b", [a.weight])], lr=0.1)


def test_step_lrs_follow_decay_frozen_zero_and_warmup() -> None:
    model, rec = UserNet(lr=0.8), Recorder()
    freeze = FreezeSchedule("linear_probe", unfreeze={2: 1}, interval="step", lr_decay=0.5, warmup_steps=4)
    fit(model, [freeze, rec], max_steps=7, max_epochs=2)
    assert len(rec.step_lrs) == 7
    # param groups: (weights, biases) per layer group, in order backbone.0, .1, .2, head
    head, b2 = 0.8, 0.8 * 0.5
    for step, lrs in enumerate(rec.step_lrs):
        assert lrs[6:] == [head, head]
        assert lrs[:4] == [0.0] * 4
        warm = 0.0 if step < 2 else min(1.0, (step - 2 + 1) / 4)
        assert lrs[4:6] == pytest.approx([b2 * warm] * 2, rel=1e-12, abs=0)
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == 0.8 * 0.125  # the scheduler's value, kept


@pytest.mark.parametrize("scheduler", ["lambda", "onecycle", "cosine", "timm"])
def test_schedulers_run_through_the_schedule(scheduler: str) -> None:
    model, rec = UserNet(scheduler=scheduler), Recorder()
    freeze = FreezeSchedule("linear_probe", unfreeze={1: 1, 2: "all"}, lr_decay=0.5)
    fit(model, [freeze, rec], max_epochs=3)
    assert len(rec.step_lrs) == 12
    for step, lrs in enumerate(rec.step_lrs):
        unfrozen = 1 + (step >= 4) + 2 * (step >= 8)  # layer groups trained, from the head down
        head = lrs[-1]
        assert head > 0
        for i in range(4):
            want = head * 0.5 ** (3 - i) if i >= 4 - unfrozen else 0.0
            assert lrs[2 * i] == pytest.approx(want, rel=1e-9) and lrs[2 * i + 1] == lrs[2 * i]


def run_for_resume(
    tmp_path: Path, max_epochs: int, ckpt: str | None = None
) -> tuple[UserNet, Recorder, Trainer]:
    model, rec = UserNet(scheduler="cosine"), Recorder()
    freeze = FreezeSchedule(
        "partial", unfreeze={3: 1, 7: "all"}, interval="step", lr_decay=0.5, warmup_steps=3
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    trainer = Trainer(
        **trainer_kwargs(
            callbacks=[freeze, rec, checkpoint], max_epochs=max_epochs, enable_checkpointing=True
        )
    )
    trainer.fit(model, loader(), ckpt_path=ckpt)
    return model, rec, trainer


def test_resume_mid_schedule_equals_uninterrupted_run(tmp_path: Path) -> None:
    # 12 steps: milestones at steps 3 and 7, warm-up 3; the checkpoint is taken after step 4, while
    # backbone.1 (unfrozen at step 3) is warming up
    full, full_rec, _ = run_for_resume(tmp_path / "a", max_epochs=3)
    ckpt = tmp_path / "a" / "epoch=0.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*after resume the layer groups' lrs")
        resumed, rec, trainer = run_for_resume(tmp_path / "b", max_epochs=3, ckpt=str(ckpt))
    freeze = next(c for c in trainer.callbacks if isinstance(c, FreezeSchedule))
    assert freeze.history[0]["step"] == 4 and freeze.unfrozen_at == {"backbone.1": 3, "backbone.0": 7}
    assert resumed.losses == full.losses[4:]
    assert rec.step_lrs == full_rec.step_lrs[4:]
    assert rec.bn_training == full_rec.bn_training[4:] and rec.trainable == full_rec.trainable[4:]
    # restored before the first resumed step: backbone.1 (unfrozen at step 3) trains, warming up
    assert rec.bn_training[0] == [False, True, True] and rec.trainable[0] == [False]
    head = rec.step_lrs[0][-1]
    assert rec.step_lrs[0][:2] == [0.0, 0.0]
    assert rec.step_lrs[0][2] == pytest.approx(head * 0.5**2 * (4 - 3 + 1) / 3, rel=1e-12)
    for (n, p), q in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q) and p.requires_grad == q.requires_grad, n


def test_three_lines_on_a_users_module() -> None:
    """The user's module (tests/callbacks/_freeze_models.UserNet) needs one line; the trainer one more."""

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
            self.classifier = nn.Linear(8, 2)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            x = torch.randn(4, 4, generator=torch.Generator().manual_seed(batch_idx))
            return F.cross_entropy(self.classifier(self.encoder(x)), torch.tensor([0, 1, 0, 1]))

        def configure_optimizers(self) -> Any:
            from lightning_tl.callbacks import freeze_param_groups  # line 1

            return torch.optim.SGD(freeze_param_groups(self, lr=0.1))  # line 2

        def train_dataloader(self) -> Any:
            return range(3)

    model = Plain()
    encoder = [p.clone() for p in model.encoder.parameters()]
    freeze = FreezeSchedule("linear_probe", groups=["encoder.0.*", "encoder.2.*", "classifier.*"])
    Trainer(**trainer_kwargs(callbacks=[freeze], max_steps=3)).fit(model)  # line 3
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.encoder.parameters(), strict=True))
    assert freeze.history[0]["trainable_params"] == 8 * 2 + 2


def test_auto_strategy_rule_and_thresholds() -> None:
    # defaults fitted to BENCHMARKS.md's freezing tables: full fine-tuning won at every measured size
    assert all(choose_strategy(n, k) == "full" for n, k in [(5, 5), (10, 10), (100, 5), (10_000, 100)])
    assert set(AUTO_THRESHOLDS) == {
        "partial_min_samples",
        "partial_min_per_class",
        "full_min_samples",
        "full_min_per_class",
    }
    textbook = {  # the rule the defaults replaced, still expressible as an override
        "partial_min_samples": 500,
        "partial_min_per_class": 50,
        "full_min_samples": 5_000,
        "full_min_per_class": 500,
    }
    assert choose_strategy(100, 5, textbook) == "linear_probe"
    assert choose_strategy(1000, 5, textbook) == "partial"
    assert choose_strategy(10_000, 5, textbook) == "full"
    assert choose_strategy(10_000, 100, textbook) == "partial"  # 100 per class: not enough for full
    cost = {"full_min_per_class": 100, "partial_min_per_class": 20}  # per-class thresholds only
    assert [choose_strategy(n * 10, 10, cost) for n in (19, 20, 99, 100)] == [
        "linear_probe",
        "partial",
        "partial",
        "full",
    ]
    with pytest.raises(ValueError, match=r"unknown auto_thresholds keys \['full_min'\]"):
        choose_strategy(100, 5, {"full_min": 3})
    with pytest.raises(ValueError, match="numbers >= 0"):
        choose_strategy(100, 5, {"full_min_per_class": -1})
    with pytest.raises(ValueError, match="num_classes >= 1"):
        choose_strategy(100, 0)
    freeze = FreezeSchedule("auto", num_train_samples=40, num_classes=4)
    fit(UserNet(), [freeze], max_steps=1)
    assert freeze.resolved_strategy == "full" and all(freeze.trainable)
    freeze = FreezeSchedule("auto", num_train_samples=1000, num_classes=4, auto_thresholds=textbook)
    fit(UserNet(), [freeze], max_steps=1)
    assert freeze.resolved_strategy == "partial" and freeze.trainable == [False, False, True, True]
    freeze = FreezeSchedule("auto", num_classes=4, auto_thresholds=textbook)  # the loader's 32 samples
    fit(UserNet(), [freeze], max_steps=1)
    assert freeze.resolved_strategy == "linear_probe"


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'linear'.*'linear_probe'"):
        FreezeSchedule("linear")
    with pytest.raises(ValueError, match="interval"):
        FreezeSchedule(interval="batch")
    with pytest.raises(ValueError, match="auto_thresholds"):
        FreezeSchedule(auto_thresholds={"full_min": 3})
    with pytest.raises(ValueError, match=r"auto_thresholds must be numbers >= 0.*'partial_min_samples': -5"):
        FreezeSchedule(auto_thresholds={"partial_min_samples": -5})
    with pytest.raises(ValueError, match=r"'encoder\.\*' matches no parameter"):
        fit(UserNet(), [FreezeSchedule(groups=["encoder.*", "*"])], max_steps=1)
    with pytest.raises(ValueError, match=r"in no layer group.*'\*'"):
        fit(UserNet(), [FreezeSchedule(groups=["backbone.0.*", "head.*"])], max_steps=1)
    with pytest.raises(ValueError, match=r"unknown groups \['backbone.9'\]"):
        fit(UserNet(), [FreezeSchedule(unfreeze={1: ["backbone.9"]})], max_steps=1)
    with pytest.warns(UserWarning, match=r"milestone 5 is never reached.*max_epochs=2"):
        fit(UserNet(), [FreezeSchedule(unfreeze={1: 1, 5: "all"})], max_epochs=2)

    class NoBackbone(UserNet):
        def __init__(self) -> None:
            super().__init__()
            self.body = self.backbone
            del self.backbone

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.body(x))

    with pytest.raises(ValueError, match=r"no `backbone` module attribute.*Pass groups=\["):
        fit(NoBackbone(), [FreezeSchedule()], max_steps=1)

    class OwnOptimizer(UserNet):
        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ValueError, match=r"not FreezeSchedule's layer groups.*freeze_param_groups"):
        fit(OwnOptimizer(), [FreezeSchedule()], max_steps=1)
