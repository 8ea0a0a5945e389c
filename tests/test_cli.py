"""The lightning-tl command: every recipe runs and leaves last.ckpt, resume from last is exact, recipes by
name, user subclasses plug in, mistakes are reported as one message."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from own_data import OWN_DATA_RECIPE_ARGS
from torch import Tensor, nn

from lightning_tl.cli import build_cli, main
from lightning_tl.modules import SimCLR
from lightning_tl.recipes import list_recipes

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
RECIPE_ARGS: dict[str, Callable[[Path], list[str]]] = {
    "clip/finetune_openclip.yaml": _openclip_checkpoint,
    **OWN_DATA_RECIPE_ARGS,
}


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


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(r.relative_to(ROOT / "recipes")) for r in RECIPES])
def test_every_recipe_leaves_last_checkpoint_after_an_epoch(recipe: Path, tmp_path: Path) -> None:
    """Whatever the recipe's validation interval, fit writes <root>/checkpoints/last.ckpt every epoch."""
    name = str(recipe.relative_to(ROOT / "recipes"))
    extra = RECIPE_ARGS[name](tmp_path) if name in RECIPE_ARGS else []
    args = ["fit", "--config", str(recipe), *_one_batch_epochs(1), *_run_dir(tmp_path), *extra]
    cli = build_cli([*args, "--trainer.callbacks=[]"])  # the recipe's monitors are not what is tested
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert cli.trainer.global_step == 1 and last.is_file()
    assert not list(last.parent.glob("*.partial"))
    saved = torch.load(last, map_location="cpu", weights_only=True)  # ours load without unpickling code
    assert saved["epoch"] == 0 and saved["global_step"] == 1
    for file in [last, *tmp_path.glob("*.pt")]:  # free the disk now (CLIP checkpoints are large)
        file.unlink()


def _one_batch_epochs(epochs: int, batches: int = 1) -> list[str]:
    return [
        f"--trainer.max_epochs={epochs}",
        f"--trainer.limit_train_batches={batches}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
    ]


#: Recipes resumed in the exactness test: views drawn on the device, a queue, a supervised policy.
RESUMED = ["simclr/digits", "moco/digits", "augment/fashion_mnist_randaugment"]


@pytest.mark.parametrize("recipe", RESUMED)
def test_resume_from_last_continues_exactly(recipe: str, tmp_path: Path) -> None:
    """Killed after epoch 2 and resumed with --ckpt_path=last, a run ends with the uninterrupted weights."""
    common = ["fit", "--recipe", recipe, "--data.init_args.batch_size=32", *_one_batch_epochs(3, batches=2)]
    main([*common, "--trainer.callbacks=[]", *_run_dir(tmp_path / "whole")])
    whole = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=True)
    parts = [*common, *_run_dir(tmp_path / "parts")]
    killer = f'{{"class_path": "{__name__}.CrashAtEpochStart", "init_args": {{"epoch": 2}}}}'
    crash = f"--trainer.callbacks=[{killer}]"
    with pytest.raises(RuntimeError, match="simulated crash"):
        main([*parts, crash])
    last = tmp_path / "parts/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4  # epochs 0 and 1 survived the crash
    parts[1:3] = ["--config", str(ROOT / f"recipes/{recipe}.yaml")]
    cli = build_cli([*parts, "--trainer.callbacks=[]", "--ckpt_path=last"])
    assert cli.trainer.ckpt_path == str(last)  # "last" found the crashed run's checkpoint and resumed
    resumed = torch.load(tmp_path / "parts/checkpoints/last.ckpt", weights_only=True)
    assert (resumed["global_step"], whole["global_step"]) == (6, 6)
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key


class CrashAtEpochStart(L.Callback):
    """Kills a run (an exception, as a pre-empted job would die) when epoch ``epoch`` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated crash at the start of epoch {self.epoch}")


def test_checkpoint_of_another_module_is_refused(tmp_path: Path) -> None:
    """A MoCo checkpoint given to the SimCLR recipe used to train MoCo silently."""
    main(
        [
            "fit",
            "--recipe",
            "moco/digits",
            "--trainer.callbacks=[]",
            *_one_batch_epochs(1),
            *_run_dir(tmp_path),
        ]
    )
    moco = tmp_path / "checkpoints" / "last.ckpt"
    args = ["fit", "--recipe", "simclr/digits", f"--ckpt_path={moco}", *_run_dir(tmp_path / "simclr")]
    with pytest.raises(ValueError, match=r"holds a lightning_tl\.modules\.MoCo model.*trains lightning_tl"):
        build_cli(["fit", "--config", str(ROOT / "recipes/simclr/digits.yaml"), *args[3:]])


def test_recipes_are_listed_by_name_with_their_purpose(capsys: pytest.CaptureFixture[str]) -> None:
    main(["recipes"])
    out = capsys.readouterr().out
    names = list_recipes()
    assert sorted(names) == sorted(str(r.relative_to(ROOT / "recipes").with_suffix("")) for r in RECIPES)
    for name, text in names.items():
        assert f"{name}  " in out and text in out
        assert text and len(text) <= 108, f"{name}: first line must be a '# ' one-line purpose: {text!r}"
    main(["recipes", "simclr/digits"])
    assert capsys.readouterr().out == (ROOT / "recipes/simclr/digits.yaml").read_text()


def test_fit_by_recipe_name(tmp_path: Path) -> None:
    main(["fit", "--recipe=simclr/digits", "--trainer.fast_dev_run=true", *_run_dir(tmp_path)])
    config = next(tmp_path.rglob("config.yaml"), None)
    assert config is None  # fast_dev_run writes no config; the run itself is the check
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "simclr/digitz"])
    assert exit_info.value.code == 2


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightning_tl", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_mistakes_print_one_message_not_the_usage(tmp_path: Path) -> None:
    """Our validation's message is the last line; no usage text, no Namespace dump, exit status 2."""
    bad_value = _run(
        "fit", "--recipe", "simclr/digits", "--model.init_args.temperature=-1", *_run_dir(tmp_path)
    )
    last = bad_value.stderr.strip().splitlines()[-1]
    assert bad_value.returncode == 2, bad_value.stderr[-2000:]
    assert last == "lightning-tl: error: ValueError: temperature must be > 0, got -1.0; " + (
        "the paper uses 0.1-1.0 (0.5 here)."
    )
    unknown = _run("fit", "--recipe", "simclr/digitz")
    assert unknown.returncode == 2 and "Did you mean: simclr/digits" in unknown.stderr
    for proc in (bad_value, unknown):
        assert (
            "usage:" not in proc.stderr and "Namespace(" not in proc.stderr and "Traceback" not in proc.stderr
        )


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
    proc = _run("fit", "--recipe", "simclr/digits", "--model.init_args.temprature=0.1", *_run_dir(tmp_path))
    assert proc.returncode == 2
    assert "Option 'temprature' is not accepted" in proc.stderr
    assert "usage:" not in proc.stderr and "Given value" not in proc.stderr


def test_renamed_key_names_its_new_name(tmp_path: Path) -> None:
    """ImageClassifier's and AdapterResNet's ``model_kwargs`` is ``backbone_kwargs`` now (a dict value:
    the parser names the refused key as 'model_kwargs.channels')."""
    old = "--model.init_args.model_kwargs={'channels': [8, 8, 16, 16]}"
    proc = _run("fit", "--recipe", "finetune/fashion_mnist_partial", old, *_run_dir(tmp_path))
    assert proc.returncode == 2
    assert "'model_kwargs' is now called 'backbone_kwargs'" in proc.stderr


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
