"""Freeze strategies as objects: registry, names = objects, BitFit, norm-only, layer-wise lrs, resume, CLI."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from _freeze_models import UserNet, bn_modules, loader, trainer_kwargs
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

import lightning_tl.callbacks._freeze_registry as registry
from lightning_tl.callbacks import (
    AutoBySize,
    BitFit,
    FreezeContext,
    FreezeSchedule,
    FreezeStrategy,
    FullFinetune,
    LinearProbe,
    NormOnly,
    PartialFinetune,
    create_freeze_strategy,
    list_freeze_strategies,
    register_freeze_strategy,
)
from lightning_tl.callbacks.freeze_strategies import is_bias, norm_parameter_names
from lightning_tl.modules import ImageClassifier
from lightning_tl.optim import provided_param_groups

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = ["auto", "bitfit", "full", "linear_probe", "norm_only", "partial"]
BODY = ["backbone.0", "backbone.1", "backbone.2"]  # UserNet's groups below the head


class Steps(Callback):
    """Per optimizer step: the lrs the optimizer really used, which parameters require grad, BN modes."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.requires_grad: list[dict[str, bool]] = []
        self.bn_training: list[list[bool]] = []

    def on_train_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        trainer.optimizers[0].register_step_pre_hook(
            lambda opt, *_: self.lrs.append([g["lr"] for g in opt.param_groups])
        )

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.requires_grad.append({n: p.requires_grad for n, p in pl_module.named_parameters()})
        self.bn_training.append([m.training for m in bn_modules(pl_module)])


def fit(model: pl.LightningModule, callbacks: list[Callback], **kwargs: Any) -> Trainer:
    trainer = Trainer(**trainer_kwargs(callbacks=callbacks, **kwargs))
    trainer.fit(model, loader())
    return trainer


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def moved(before: dict[str, Tensor], model: nn.Module) -> set[str]:
    """Names of the parameters and buffers (BN running statistics included) that changed."""
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_registry_lists_builtins_and_takes_a_users_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_STRATEGIES", dict(registry._STRATEGIES))  # restored after the test
    assert list_freeze_strategies() == BUILT_IN
    assert [type(create_freeze_strategy(n)) for n in BUILT_IN] == [
        AutoBySize,
        BitFit,
        FullFinetune,
        LinearProbe,
        NormOnly,
        PartialFinetune,
    ]

    class StemAndHead(FreezeStrategy):
        """Not expressible by the built-ins: the first group and the head train, the middle is frozen."""

        def groups(self, ctx: FreezeContext) -> list[bool]:
            return [i in (0, len(ctx.groups) - 1) for i in range(len(ctx.groups))]

    register_freeze_strategy("stem_and_head", StemAndHead)
    assert "stem_and_head" in list_freeze_strategies()
    model = UserNet()
    before = snapshot(model)
    freeze = FreezeSchedule("stem_and_head")
    fit(model, [freeze], max_steps=2)
    assert freeze.resolved_strategy == "StemAndHead" and freeze.trainable == [True, False, False, True]
    assert {k.split(".")[1] for k in moved(before, model) if k.startswith("backbone.")} == {"0"}

    with pytest.raises(ValueError, match=r"'stem_and_head' is already registered.*overwrite=True"):
        register_freeze_strategy("stem_and_head", StemAndHead)
    register_freeze_strategy("stem_and_head", LinearProbe, overwrite=True)
    assert isinstance(create_freeze_strategy("stem_and_head"), LinearProbe)
    with pytest.raises(ValueError, match="must be a FreezeStrategy class or callable"):
        register_freeze_strategy("broken", "bitfit")  # type: ignore[arg-type]
    register_freeze_strategy("not_a_strategy", lambda: "bitfit")  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="returned str, not a FreezeStrategy"):
        FreezeSchedule("not_a_strategy")
    with pytest.raises(ValueError, match=r"unknown strategy 'bitfi'; use one of 'auto', 'bitfit'.*register"):
        FreezeSchedule("bitfi")


@pytest.mark.parametrize(
    ("name", "strategy", "kwargs"),
    [
        ("linear_probe", LinearProbe(), {}),
        ("partial", PartialFinetune(), {"trainable_groups": 2}),
        ("full", FullFinetune(), {}),
        ("auto", AutoBySize(), {"num_classes": 4, "auto_thresholds": {"full_min_per_class": 100}}),
        ("bitfit", BitFit(), {}),
        ("norm_only", NormOnly(), {}),
    ],
)
def test_a_name_and_its_object_train_identically(name: str, strategy: FreezeStrategy, kwargs: Any) -> None:
    runs = []
    for given in (name, strategy):
        model = UserNet()
        freeze = FreezeSchedule(
            given, unfreeze={2: 1}, interval="step", lr_decay=0.5, warmup_steps=2, **kwargs
        )
        fit(model, [freeze], max_steps=5)
        runs.append((model.losses, snapshot(model), freeze.history, freeze.resolved_strategy))
    (losses, state, history, resolved), (losses2, state2, history2, resolved2) = runs
    assert losses == losses2 and history == history2 and resolved == resolved2
    assert all(torch.equal(v, state2[k]) for k, v in state.items())
    assert resolved == ("partial" if name == "auto" else name)  # 8 per class < 100: auto picks partial


def test_bias_and_norm_parameters_are_found_by_name_and_type() -> None:
    model = UserNet()
    below = [n for n, _ in model.named_parameters() if not n.startswith("head.")]
    assert {n for n in below if is_bias(n)} == {f"backbone.{i}.0.bias" for i in range(2)} | {
        f"backbone.{i}.1.bias" for i in range(2)
    } | {"backbone.2.0.0.bias", "backbone.2.0.1.bias"}
    assert norm_parameter_names(model) == {
        f"backbone.{i}.1.{p}" for i in range(2) for p in ("weight", "bias")
    } | {f"backbone.2.0.1.{p}" for p in ("weight", "bias")}
    vit_like = nn.Sequential(
        nn.Linear(4, 4), nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.Linear(4, 4, bias=False)
    )
    assert norm_parameter_names(vit_like) == {"1.weight", "1.bias", "2.weight", "2.bias"}


def test_bitfit_trains_the_head_and_every_bias_only() -> None:
    model, steps = UserNet(), Steps()
    before = snapshot(model)
    freeze = FreezeSchedule(BitFit())
    fit(model, [freeze, steps], max_steps=3)
    biases = {n for n, _ in model.named_parameters() if is_bias(n) and not n.startswith("head.")}
    assert freeze.resolved_strategy == "bitfit" and freeze.extra_params == sorted(biases)
    assert freeze.trainable == [False, False, False, True]
    for flags in steps.requires_grad:
        assert {n for n, f in flags.items() if f} == biases | {"head.weight", "head.bias"}
    assert moved(before, model) == biases | {"head.weight", "head.bias"}  # no weight, no BN statistic
    assert steps.bn_training == [[False] * 3] * 3  # frozen groups' BN in eval mode: statistics fixed
    head = sum(p.numel() for p in model.head.parameters())
    assert freeze.history[0]["trainable_params"] == head + sum(model.get_parameter(n).numel() for n in biases)


def test_norm_only_trains_the_head_and_norm_layers_only() -> None:
    model, steps = UserNet(), Steps()
    before = snapshot(model)
    freeze = FreezeSchedule("norm_only")
    fit(model, [freeze, steps], max_steps=3)
    norms = norm_parameter_names(model)
    assert freeze.extra_params == sorted(norms)
    assert moved(before, model) == norms | {"head.weight", "head.bias"}  # conv weights/biases, BN stats fixed
    assert steps.bn_training == [[False] * 3] * 3


def test_train_bn_adds_batch_norm_statistics_and_scales_to_bitfit() -> None:
    model, steps = UserNet(), Steps()
    before = snapshot(model)
    fit(model, [FreezeSchedule("bitfit", train_bn=True), steps], max_steps=3)
    changed = moved(before, model)
    assert steps.bn_training == [[True] * 3] * 3
    assert {"backbone.0.1.weight", "backbone.0.1.bias", "backbone.0.1.running_mean"} <= changed
    # (the conv biases train too, but a bias right before a BatchNorm in train mode gets no gradient)
    assert not any(
        n.endswith(".0.weight") for n in changed if n.startswith("backbone.")
    )  # conv weights fixed


def test_bitfit_biases_get_layerwise_lrs_and_no_second_warmup() -> None:
    model, steps = UserNet(lr=0.8), Steps()
    freeze = FreezeSchedule("bitfit", unfreeze={2: 1}, interval="step", lr_decay=0.5, warmup_steps=4)
    fit(model, [freeze, steps], max_steps=7, max_epochs=2)
    # param groups: (weights, 1-D: biases and BN scales) per layer group, backbone.0, .1, .2, head
    for step, lrs in enumerate(steps.lrs):
        assert lrs[6:] == [0.8, 0.8]
        assert lrs[1::2][:3] == [0.8 * 0.5**3, 0.8 * 0.5**2, 0.8 * 0.5]  # biases: their layer-wise lr, always
        warm = 0.0 if step < 2 else min(1.0, (step - 2 + 1) / 4)
        assert lrs[0:4:2] == [0.0, 0.0] and lrs[4] == pytest.approx(0.8 * 0.5 * warm, rel=1e-12, abs=0)
    assert freeze.trainable == [False, False, True, True]
    # a frozen BN scale shares its param group (lr > 0) with the biases, but has no gradient: it never moves
    assert torch.equal(model.backbone[0][1].weight, UserNet().backbone[0][1].weight)


def test_train_bn_scales_keep_their_lr_when_their_group_unfreezes() -> None:
    """Under train_bn the BatchNorm scales of frozen groups train from the first step; when their group
    unfreezes only its weights warm up (the 1-D group of biases and BN scales keeps its lr, as BitFit's)."""
    model, steps = UserNet(lr=0.8), Steps()
    freeze = FreezeSchedule(
        "linear_probe", unfreeze={2: 1}, interval="step", lr_decay=0.5, warmup_steps=4, train_bn=True
    )
    fit(model, [freeze, steps], max_steps=7, max_epochs=2)
    for step, lrs in enumerate(steps.lrs):
        assert lrs[1::2][:3] == [0.8 * 0.5**3, 0.8 * 0.5**2, 0.8 * 0.5]  # BN scales: layer-wise, always
        warm = 0.0 if step < 2 else min(1.0, (step - 2 + 1) / 4)
        assert lrs[0:4:2] == [0.0, 0.0] and lrs[4] == pytest.approx(0.8 * 0.5 * warm, rel=1e-12, abs=0)
    assert steps.bn_training == [[True] * 3] * 7
    without = FreezeSchedule("linear_probe", unfreeze={2: 1}, interval="step", lr_decay=0.5, warmup_steps=4)
    plain = Steps()
    fit(UserNet(lr=0.8), [without, plain], max_steps=7, max_epochs=2)
    assert plain.lrs[2][5] == pytest.approx(0.8 * 0.5 / 4)  # without train_bn the 1-D group warms up too


def run_for_resume(
    tmp_path: Path, max_epochs: int, ckpt: str | None = None
) -> tuple[UserNet, Steps, Trainer]:
    model, steps = UserNet(scheduler="cosine"), Steps()
    freeze = FreezeSchedule(
        "bitfit", unfreeze={3: 1, 7: "all"}, interval="step", lr_decay=0.5, warmup_steps=3
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    kwargs = trainer_kwargs(
        callbacks=[freeze, steps, checkpoint], max_epochs=max_epochs, enable_checkpointing=True
    )
    trainer = Trainer(**kwargs)
    trainer.fit(model, loader(), ckpt_path=ckpt)
    return model, steps, trainer


def test_bitfit_resume_mid_schedule_equals_uninterrupted_run(tmp_path: Path) -> None:
    full, full_steps, _ = run_for_resume(tmp_path / "a", max_epochs=3)
    ckpt = tmp_path / "a" / "epoch=0.ckpt"
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    state = next(v for k, v in saved.items() if k.startswith("FreezeSchedule"))
    assert state["strategy"] == "bitfit" and state["params"] and all(is_bias(n) for n in state["params"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*after resume the layer groups' lrs")
        resumed, steps, trainer = run_for_resume(tmp_path / "b", max_epochs=3, ckpt=str(ckpt))
    freeze = next(c for c in trainer.callbacks if isinstance(c, FreezeSchedule))
    assert freeze.resolved_strategy == "bitfit" and freeze.extra_params == state["params"]
    assert resumed.losses == full.losses[4:]
    assert steps.lrs == full_steps.lrs[4:] and steps.requires_grad == full_steps.requires_grad[4:]
    assert steps.bn_training == full_steps.bn_training[4:]
    for (n, p), q in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q) and p.requires_grad == q.requires_grad, n


def test_image_classifier_with_bitfit_moves_only_biases_and_head() -> None:
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = ImageClassifier("resnet18", small_input=True, in_channels=1, num_classes=4, lr=0.1)
    before = snapshot(model)
    fit(model, [FreezeSchedule(BitFit())], max_steps=2)
    changed = moved(before, model)
    assert {"head.linear.weight", "head.linear.bias"} <= changed
    body = {n for n in changed if n.startswith("backbone.")}
    assert body and all(n.endswith(".bias") for n in body)  # BN shifts; no conv weight, scale or statistic


def test_strategy_mistakes_are_reported_before_training() -> None:
    class NoNorms(UserNet):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 6))

    with pytest.raises(ValueError, match=r"NormOnly found no normalisation-layer parameters.*'linear_probe'"):
        fit(NoNorms(), [FreezeSchedule("norm_only")], max_steps=1)

    class Nothing(FreezeStrategy):
        def groups(self, ctx: FreezeContext) -> list[bool]:
            return [False] * len(ctx.groups)

    class TooFew(Nothing):
        def groups(self, ctx: FreezeContext) -> list[bool]:
            return [True]

    class Ghost(LinearProbe):
        def params(self, ctx: FreezeContext) -> set[str]:
            return {"backbone.7.weight"}

    with pytest.raises(ValueError, match="strategy 'Nothing' trains no parameter"):
        fit(UserNet(), [FreezeSchedule(Nothing())], max_steps=1)
    with pytest.raises(ValueError, match=r"returned 1 group flags for 4 layer groups"):
        fit(UserNet(), [FreezeSchedule(TooFew())], max_steps=1)
    with pytest.raises(ValueError, match=r"chose parameters the model lacks: \['backbone.7.weight'\]"):
        fit(UserNet(), [FreezeSchedule(Ghost())], max_steps=1)
    with pytest.raises(
        ValueError, match="strategy must be a strategy name or a FreezeStrategy instance, got int"
    ):
        FreezeSchedule(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"trainable_groups=4 but the model has only 3 groups"):
        fit(UserNet(), [FreezeSchedule(PartialFinetune(), trainable_groups=4)], max_steps=1)


def test_modules_get_param_groups_from_callbacks_without_importing_them() -> None:
    for path in sorted((ROOT / "lightning_tl" / "modules").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("lightning_tl.callbacks")], path.name
    model = UserNet()
    assert provided_param_groups(model, lr=0.1) is None  # no trainer

    class OwnGroups(Callback):  # a provider by duck typing: it only has the method
        def param_groups(
            self, module: nn.Module, lr: float, weight_decay: float = 0.0
        ) -> list[dict[str, Any]]:
            return [{"params": list(module.parameters()), "lr": lr}]

    model._trainer = Trainer(**trainer_kwargs(callbacks=[OwnGroups()]))
    assert provided_param_groups(model, lr=0.3) == [{"params": list(model.parameters()), "lr": 0.3}]
    model._trainer = Trainer(**trainer_kwargs(callbacks=[FreezeSchedule(), OwnGroups()]))
    with pytest.raises(ValueError, match=r"2 callbacks provide the optimizer's param groups"):
        provided_param_groups(model, lr=0.1)
    trainer = Trainer(**trainer_kwargs(callbacks=[FreezeSchedule(lr_decay=0.5)]))
    model._trainer = trainer
    groups = provided_param_groups(model, lr=0.1)
    assert groups is not None and [g["layer_group"] for g in groups[::2]] == [*BODY, "head"]


def _finetune_config(tmp_path: Path, strategy: Any) -> Path:
    config = yaml.safe_load((ROOT / "recipes/finetune/fashion_mnist_linear_probe.yaml").read_text())
    config["trainer"]["callbacks"] = [
        {"class_path": "lightning_tl.callbacks.FreezeSchedule", "init_args": {"strategy": strategy}}
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("strategy", "cls"),
    [
        ({"class_path": "lightning_tl.callbacks.BitFit"}, BitFit),
        ("norm_only", NormOnly),
        ("partial", PartialFinetune),
    ],
)
def test_yaml_takes_a_strategy_object_or_name(tmp_path: Path, strategy: Any, cls: type) -> None:
    from lightning_tl.cli import build_cli

    config = _finetune_config(tmp_path, strategy)
    run = [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    cli = build_cli(["fit", "--config", str(config), "--trainer.fast_dev_run=true", *run])
    freeze = next(c for c in cli.trainer.callbacks if isinstance(c, FreezeSchedule))
    assert type(freeze._strategy) is cls and cli.trainer.global_step == 1
    assert freeze.resolved_strategy == cls.name
