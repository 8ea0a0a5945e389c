"""FineTuneModule: the shared arguments of ImageClassifier and AdapterResNet, their checks and the CLI."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lightning_tl.cli import build_cli
from lightning_tl.modules import AdapterResNet, FineTuneModule, ImageClassifier

ROOT = Path(__file__).resolve().parents[2]
NARROW = {"channels": [8, 8, 16, 16], "layers": [1, 1, 1, 1]}
TINY: dict[str, Any] = {
    "backbone": "timm/resnet18",
    "backbone_kwargs": NARROW,
    "pretrained": False,
    "in_channels": 1,
}
MODULES = [ImageClassifier, AdapterResNet]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_shared_arguments_build_the_backbone_and_are_saved(module: type[FineTuneModule]) -> None:
    model = module(**TINY, num_classes=3, optimizer="adamw", lr=0.01, weight_decay=0.1, warmup_epochs=0.5)
    assert isinstance(model, FineTuneModule)
    assert model.backbone.num_features == 16  # backbone_kwargs reached the constructor
    assert (model.optimizer, model.lr, model.weight_decay, model.warmup_epochs) == ("adamw", 0.01, 0.1, 0.5)
    saved = dict(model.hparams)
    assert saved["backbone_kwargs"] == NARROW and saved["num_classes"] == 3 and saved["momentum"] == 0.9
    torch.manual_seed(0)
    rebuilt = module(**saved)  # what load_from_checkpoint does with them
    assert dict(rebuilt.hparams) == saved


def test_each_module_keeps_its_own_default_rate() -> None:
    assert ImageClassifier(**TINY).lr == 0.05
    assert AdapterResNet(**TINY).lr == 0.1


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_shared_checks_name_the_bad_value(module: type[FineTuneModule]) -> None:
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        module(**TINY, lr=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        module(**TINY, weight_decay=-1)
    with pytest.raises(ValueError, match=r"warmup_epochs must be >= 0, got -0\.5"):
        module(**TINY, warmup_epochs=-0.5)
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamww'; timm knows: .*adamw"):
        module(**TINY, optimizer="adamww")
    with pytest.raises(TypeError, match="positional"):  # only the backbone is positional
        module("timm/resnet18", False)
    with pytest.raises(TypeError, match=f"{module.__name__} got an unexpected keyword argument 'dropout'"):
        module(**TINY, dropout=0.1)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_renamed_model_kwargs_names_backbone_kwargs(module: type[FineTuneModule]) -> None:
    args = {k: v for k, v in TINY.items() if k != "backbone_kwargs"}
    renamed = r"no argument 'model_kwargs' any more; it is called 'backbone_kwargs'"
    with pytest.raises(TypeError, match=renamed):
        module(**args, model_kwargs=NARROW)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_random_backbone_warning_points_at_the_callers_line(module: type[FineTuneModule]) -> None:
    args = {k: v for k, v in TINY.items() if k != "pretrained"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module(**args)
    (warning,) = [w for w in caught if "randomly initialised" in str(w.message)]
    assert str(warning.message).startswith(f"{module.__name__}: pretrained=None")
    assert warning.filename == __file__  # stacklevel reaches past the base's __init__


def test_cli_follows_kwargs_into_the_shared_arguments(tmp_path: Path) -> None:
    cli = build_cli(
        [
            "fit",
            "--config",
            str(ROOT / "recipes/adapters/series_fashion_mnist.yaml"),
            "--model.init_args.backbone=timm/resnet18",
            f"--model.init_args.backbone_kwargs={NARROW}",
            "--model.init_args.weight_decay=0.001",
            "--data.init_args.train_subset=64",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.fast_dev_run=1",
        ]
    )
    model = cli.model
    assert isinstance(model, AdapterResNet)
    assert model.weight_decay == 0.001 and model.hparams["kind"] == "series"
    assert model.hparams["in_channels"] == 1  # linked from the datamodule into the base's argument
    assert model.backbone.num_features == 16
