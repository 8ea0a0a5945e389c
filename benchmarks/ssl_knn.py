"""The SSL family: held-out kNN accuracy of every method after the same training, over seeds.

Runs each method's recipe (``recipes/<method>/<data>.yaml``) through the CLI, as table (c) runs the
quickstart, for the same number of epochs (warm-ups scaled to keep their share of the recipe's run):
one backbone, batch and image size per data set, the recipes' KNNMonitors (digits: weighted kNN, k=20,
tau=0.1, bank = the 1,257 training images, on the validation and the test split). Each seed sets both
``seed_everything`` (the weights) and the datamodule's ``seed`` (digits: which images are held out; the
view stream), and the table pools the held-out images of every run. MoCo's digits recipe is run with
the quickstart's backbone and batch (its own uses a full torchvision ResNet-18 and batch 32). Beside
them: the randomly initialised encoder (each run's kNN before its first step; every method starts from
the same weights for a seed, which is checked) and a supervised encoder (the SimCLR recipe's backbone +
a linear classifier, cross-entropy on the labelled training images, SGD 0.05, the same epochs).

``python -m benchmarks.ssl_knn --epochs 20 --seeds 0 1 2`` (the defaults; digits on a CPU), ``--epochs 60
--seeds 0 1 2 3 4`` the recipes' own length, ``--data fashion_mnist --epochs 100`` on a GPU. Every run
reports its wall-clock and process CPU minutes (CPU time is the budget's measure on a shared machine).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from torch import Tensor

from benchmarks._timing import markdown_table
from lightning_tl.callbacks import KNNMonitor
from lightning_tl.cli import build_cli
from lightning_tl.datamodules import DigitsDataModule, FashionMNISTDataModule
from lightning_tl.modules import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
EPOCHS = 20
HALF_WIDTH = {"channels": [32, 64, 128, 256], "zero_init_last": False}  # the quickstart's backbone

#: Row name -> recipe folder; each method runs ``recipes/<folder>/<data>.yaml``.
METHODS = {
    "SimCLR": "simclr",
    "MoCo v2": "moco",
    "BYOL": "byol",
    "SimSiam": "simsiam",
    "Barlow Twins": "barlow_twins",
    "VICReg": "vicreg",
    "DINO": "dino",
}
#: Extra CLI arguments of a (method, data): MoCo's digits recipe gets the quickstart's backbone and batch.
EXTRA_ARGS = {
    ("MoCo v2", "digits"): [
        "--model.init_args.backbone=timm/resnet18",
        f"--model.init_args.backbone_kwargs={HALF_WIDTH}",
        "--data.init_args.batch_size=128",
    ],
}
SUPERVISED = "supervised (cross-entropy)"
DATA = ("digits", "fashion_mnist")


class SupervisedEncoder(ImageClassifier):
    """The SimCLR recipe's backbone + a linear classifier trained on labels; ``encode`` for the monitors."""

    def encode(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> backbone features (B, F)."""
        return self.backbone(x)


def _recipe(method: str, data: str) -> Path:
    return ROOT / f"recipes/{METHODS[method]}/{data}.yaml"


def _monitor_period(data: str) -> int:
    """The least common multiple of the data's recipes' KNNMonitor periods (``every_n_epochs``)."""
    periods = [1]
    for method in METHODS:
        config = yaml.safe_load(_recipe(method, data).read_text())
        for callback in config["trainer"].get("callbacks", []):
            if callback["class_path"].endswith("KNNMonitor"):
                periods.append(callback.get("init_args", {}).get("every_n_epochs", 1))
    return math.lcm(*periods)


def _scaled_schedules(recipe: Path, epochs: int) -> list[str]:
    """CLI overrides that keep the recipe's warm-ups the same fraction of a run of ``epochs`` epochs."""
    config = yaml.safe_load(recipe.read_text())
    scale = epochs / config["trainer"]["max_epochs"]
    init_args = config["model"]["init_args"]
    args = []
    if init_args.get("warmup_epochs"):  # learning-rate warm-up (fractions of an epoch are fine)
        args.append(f"--model.init_args.warmup_epochs={init_args['warmup_epochs'] * scale:g}")
    if init_args.get("warmup_teacher_temp_epochs"):  # DINO's teacher temperature, whole epochs
        temp_epochs = max(1, round(init_args["warmup_teacher_temp_epochs"] * scale))
        args.append(f"--model.init_args.warmup_teacher_temp_epochs={temp_epochs}")
    return args


def _fit_recipe(method: str, data: str, seed: int, epochs: int, root: str) -> L.Trainer:
    path = _recipe(method, data)
    cli = build_cli(
        [
            "fit",
            "--config",
            str(path),
            f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}",
            f"--trainer.max_epochs={epochs}",
            f"--trainer.check_val_every_n_epoch={epochs}",  # the monitors run once, after training
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            *_scaled_schedules(path, epochs),
            *EXTRA_ARGS.get((method, data), []),
        ]
    )
    return cli.trainer


def _fit_supervised(data: str, seed: int, epochs: int, root: str) -> L.Trainer:
    """The SimCLR recipe's backbone, data (labelled images, no views) and kNN monitors; SGD 0.05, cosine."""
    config = yaml.safe_load(_recipe("SimCLR", data).read_text())
    model_args, data_args = config["model"]["init_args"], config["data"]["init_args"]
    L.seed_everything(seed)
    warnings.filterwarnings("ignore", "ImageClassifier: pretrained=None")  # random init is the point
    model = SupervisedEncoder(
        backbone=model_args["backbone"],
        small_input=model_args["small_input"],
        in_channels=1,
        lr=0.05,
        warmup_epochs=0,
        model_kwargs=model_args.get("backbone_kwargs"),
    )
    kwargs = {k: v for k, v in data_args.items() if k != "views"}
    datamodule = (
        DigitsDataModule(**kwargs, seed=seed)
        if data == "digits"
        else FashionMNISTDataModule(**kwargs, seed=seed)
    )
    monitors: list[L.Callback] = [
        KNNMonitor(**{**c.get("init_args", {}), "every_n_epochs": epochs})
        for c in config["trainer"]["callbacks"]
        if c["class_path"].endswith("KNNMonitor")
    ]
    trainer = L.Trainer(
        accelerator=config["trainer"].get("accelerator", "auto"),
        devices=1,
        max_epochs=epochs,
        check_val_every_n_epoch=epochs,
        callbacks=monitors,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=datamodule)
    return trainer


def run_one(name: str, data: str, seed: int, epochs: int) -> dict[str, Any]:
    """One training run: correct held-out predictions before/after, their count, minutes, steps."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        if name == SUPERVISED:
            trainer = _fit_supervised(data, seed, epochs, tmp)
        else:
            trainer = _fit_recipe(name, data, seed, epochs, tmp)
        wall, cpu = (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60
    datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
    size = before = after = 0
    for monitor in (c for c in trainer.callbacks if isinstance(c, KNNMonitor)):  # type: ignore[attr-defined]
        history = dict(monitor.history)
        if max(history) != epochs - 1:
            raise RuntimeError(f"{name}: the {monitor.log_name} monitor last ran at epoch {max(history)}")
        n = len(datamodule.labelled_dataset(monitor.eval_split))
        size += n
        before += round(history[-1] * n)
        after += round(history[epochs - 1] * n)
    return {
        "size": size,
        "before": before,
        "after": after,
        "wall": wall,
        "cpu": cpu,
        "steps": trainer.global_step,
    }


def run(
    seeds: Sequence[int] = SEEDS,
    epochs: int = EPOCHS,
    methods: Sequence[str] | None = None,
    data: str = "digits",
) -> str:
    """The table: one row per encoder, held-out errors pooled over ``seeds``, ``epochs`` of training."""
    if data not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {data!r}")
    period = _monitor_period(data)
    if epochs < period or epochs % period:
        raise ValueError(
            f"epochs must be a multiple of {period} (the {data} recipes' kNN monitors run every {period}), "
            f"got {epochs}"
        )
    names = list(methods) if methods is not None else [*METHODS, SUPERVISED]
    results = {name: [run_one(name, data, seed, epochs) for seed in seeds] for name in names}
    first = next(iter(results.values()))
    random_errors = [r["size"] - r["before"] for r in first]
    total = sum(r["size"] for r in first)
    for name, runs in results.items():  # every method starts from the same encoder for a seed
        if [r["size"] - r["before"] for r in runs] != random_errors:
            raise RuntimeError(f"{name} did not start from the same random encoder as {names[0]}")

    def row(name: str, errors: list[int], runs: list[dict[str, Any]] | None) -> list[object]:
        wins = "" if runs is None else f"{sum(e < r for e, r in zip(errors, random_errors, strict=True))}"
        minutes = "" if runs is None else f"{sum(r['wall'] for r in runs) / len(runs):.1f}"
        cpu = "" if runs is None else f"{sum(r['cpu'] for r in runs) / len(runs):.1f}"
        steps = 0 if runs is None else runs[0]["steps"]
        cells = " / ".join(str(e) for e in errors)
        return [name, steps, cells, f"{100 * sum(errors) / total:.1f}%", wins, minutes, cpu]

    rows = [row("random init (no training)", random_errors, None)]
    rows += [row(name, [r["size"] - r["after"] for r in runs], runs) for name, runs in results.items()]
    simclr = yaml.safe_load(_recipe("SimCLR", data).read_text())
    model_args, data_args = simclr["model"]["init_args"], simclr["data"]["init_args"]
    width = " (half width)" if model_args.get("backbone_kwargs") else ""
    title = (
        f"{data}: {model_args['backbone']}{width}, {data_args['image_size']} px, {epochs} epochs of batch "
        f"{data_args['batch_size']} each, seeds {', '.join(map(str, seeds))} (each sets the weights and the "
        f"held-out split); weighted kNN errors on the {total // len(seeds)} held-out images of each seed\n\n"
    )
    header = [
        "encoder",
        "steps",
        "held-out errors per seed",
        f"pooled error ({total} images)",
        f"seeds better than random (of {len(seeds)})",
        "wall min/run",
        "CPU min/run",
    ]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", choices=[*METHODS, SUPERVISED], default=None)
    parser.add_argument("--data", choices=DATA, default="digits")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below read their own arguments, not this script's
    print(run(args.seeds, args.epochs, args.methods, args.data), flush=True)
