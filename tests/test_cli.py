"""The lightning-tl command: every recipe runs, user subclasses plug in, bad keys are reported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lightning_tl.cli import build_cli, main
from lightning_tl.modules import SimCLR

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def _openclip_checkpoint(tmp_path: Path) -> list[str]:
    """recipes/clip/finetune_openclip.yaml loads a local open_clip checkpoint: write a random-weight one."""
    import open_clip

    model = open_clip.create_model("ViT-B-32")
    path = tmp_path / "ViT-B-32.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)  # half: a smaller file
    return [
        f"--model.init_args.pretrained={path}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


#: Extra arguments a recipe needs in the test (files it expects the user to provide).
RECIPE_ARGS: dict[str, Callable[[Path], list[str]]] = {"clip/finetune_openclip.yaml": _openclip_checkpoint}


def _run_dir(tmp_path: Path) -> list[str]:
    return [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(ROOT / "recipes")) for r in RECIPES])
def test_every_recipe_runs_fast_dev_run(recipe: Path, tmp_path: Path) -> None:
    name = str(recipe.relative_to(ROOT / "recipes"))
    extra = RECIPE_ARGS[name](tmp_path) if name in RECIPE_ARGS else []
    cli = build_cli(
        ["fit", "--config", str(recipe), "--trainer.fast_dev_run=true", *_run_dir(tmp_path), *extra]
    )
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    for weights in tmp_path.glob("*.pt"):  # large checkpoints written by RECIPE_ARGS: free the disk now
        weights.unlink()


class SimCLRWithVarianceTerm(SimCLR):
    """A user's variant: a deeper head and an extra loss term that keeps each dimension's std near 1."""

    def __init__(self, variance_weight: float = 0.5, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.variance_weight = variance_weight
        width = self.backbone.num_features
        self.projection_head = nn.Sequential(
            nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16)
        )
        self.extra_terms: list[float] = []

    def compute_loss(self, projections: list[Tensor]) -> Tensor:
        std = torch.cat(projections).std(dim=0)
        variance = torch.relu(1 - std).mean()
        self.extra_terms.append(variance.item())
        return super().compute_loss(projections) + self.variance_weight * variance


def test_user_subclass_trains_through_cli(tmp_path: Path) -> None:
    args = [
        "fit",
        "--config",
        str(ROOT / "recipes/simclr/digits.yaml"),
        f"--model.class_path={__name__}.SimCLRWithVarianceTerm",
        "--model.init_args.variance_weight=0.25",
        "--data.init_args.image_size=8",
        "--data.init_args.batch_size=32",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks=[]",
        *_run_dir(tmp_path),
    ]
    cli = build_cli(args)
    model = cli.model
    assert isinstance(model, SimCLRWithVarianceTerm) and model.variance_weight == 0.25
    assert len(model.extra_terms) == 2
    assert model.hparams.in_channels == 1 and model.hparams.num_classes == 10  # linked from the datamodule
    assert isinstance(model.projection_head, nn.Sequential)
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved and "SimCLRWithVarianceTerm" in saved[0].read_text()


def test_unknown_key_is_reported(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_tl",
            "fit",
            "--config",
            str(ROOT / "recipes/simclr/digits.yaml"),
            "--model.init_args.temprature=0.1",
            *_run_dir(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "temprature" in proc.stderr


def test_print_config_resolves_recipe() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_tl",
            "fit",
            "--config",
            str(ROOT / "recipes/simclr/digits.yaml"),
            "--print_config",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "lightning_tl.modules.SimCLR" in proc.stdout and "backbone: timm/resnet18" in proc.stdout


def test_validate_and_predict_subcommands(tmp_path: Path) -> None:
    common = [
        "--config",
        str(ROOT / "recipes/simclr/digits.yaml"),
        "--data.init_args.image_size=8",
        *_run_dir(tmp_path),
    ]
    cli = build_cli(["validate", *common, "--trainer.callbacks=[]"])
    assert cli.trainer.state.finished
    cli = build_cli(["predict", *common, "--trainer.callbacks=[]", "--trainer.limit_predict_batches=2"])
    outputs = cli.trainer.predict_loop.predictions
    width = cli.model.backbone.num_features
    assert len(outputs) == 2 and outputs[0]["features"].shape == (cli.datamodule.batch_size, width)


def test_help_names_the_extra_tools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "preview" in out and "augsearch" in out and "fit" in out
