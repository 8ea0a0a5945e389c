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
--seeds 0 1 2 3 4`` the recipes' own length. ``--budget`` picks the size of the runs: ``recipe`` (the
default) runs each recipe as written, which for ``--data fashion_mnist --epochs 100`` is the GPU path
(a full ResNet-18, 28 px, batch 256, the 55,000 training images: about 17 h a run on 2 CPU cores).
``python -m benchmarks.ssl_knn --data fashion_mnist --budget cpu --epochs 5 --seeds 0 1 2 3 4`` is the
Fashion-MNIST table on a CPU: every method and the supervised row get the same budget (``CPU_BUDGET``):
the digits quickstart's half-width timm ResNet-18 (small input), 16 px images, batch 128, a stratified
subset of 3,840 training images drawn by each seed (30 steps an epoch), the heads (and MoCo's queue)
of the method's digits recipe (``HEAD_ARGS``), the Fashion-MNIST recipe otherwise (optimizer, rates,
temperatures, momentum, views); its KNNMonitor (k=200, tau=0.1, on the 5,000 validation images) with
``max_bank_size`` at most 10,000; the bank is the training split, here the 3,840-image subset. Every
run reports its wall-clock and process CPU minutes (CPU time is the budget's measure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
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
BUDGETS = ("recipe", "cpu")
#: ``--budget cpu`` (Fashion-MNIST): the one CPU-sized setting of every method and of the supervised row.
CPU_BUDGET: dict[str, Any] = {
    "backbone": "timm/resnet18",
    "backbone_kwargs": HALF_WIDTH,
    "small_input": True,
    "image_size": 16,
    "batch_size": 128,
    "train_subset": 3840,  # 30 steps of 128 an epoch
    "max_bank_size": 10_000,  # the KNNMonitors' cap (the bank is the training split: here the subset)
}
#: Model arguments that size a method's heads (and MoCo's queue): ``--budget cpu`` takes the digits recipe's.
HEAD_ARGS = (
    "hidden_dim",
    "output_dim",
    "predictor_hidden_dim",
    "bottleneck_dim",
    "projector_layers",
    "queue_size",
)


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


def _is_knn(callback: dict[str, Any]) -> bool:
    return str(callback["class_path"]).endswith("KNNMonitor")


def _capped_bank(init_args: dict[str, Any]) -> dict[str, Any]:
    """A KNNMonitor's arguments with ``max_bank_size`` at most the CPU budget's."""
    cap, size = CPU_BUDGET["max_bank_size"], init_args.get("max_bank_size")
    return {**init_args, "max_bank_size": cap if size is None else min(size, cap)}


def _check_budget(data: str, budget: str) -> None:
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    if budget == "cpu" and data != "fashion_mnist":
        raise ValueError(
            f"--budget cpu sizes the fashion_mnist runs; the {data} recipes are CPU-sized already"
        )


def _budget_args(method: str, data: str, budget: str) -> list[str]:
    """CLI overrides of a (method, data) run: the CPU budget's backbone, data, heads and kNN bank."""
    if budget == "recipe":
        return list(EXTRA_ARGS.get((method, data), []))
    config = yaml.safe_load(_recipe(method, data).read_text())
    heads = yaml.safe_load(_recipe(method, "digits").read_text())["model"]["init_args"]
    callbacks = [
        {**c, "init_args": _capped_bank(c.get("init_args", {}))} if _is_knn(c) else c
        for c in config["trainer"]["callbacks"]
    ]
    return [
        f"--model.init_args.backbone={CPU_BUDGET['backbone']}",
        f"--model.init_args.backbone_kwargs={json.dumps(CPU_BUDGET['backbone_kwargs'])}",
        f"--model.init_args.small_input={json.dumps(CPU_BUDGET['small_input'])}",
        *(f"--model.init_args.{name}={heads[name]}" for name in HEAD_ARGS if name in heads),
        *(
            f"--data.init_args.{name}={CPU_BUDGET[name]}"
            for name in ("image_size", "batch_size", "train_subset")
        ),
        f"--trainer.callbacks={json.dumps(callbacks)}",  # the whole list: an item cannot be overridden alone
    ]


def _fit_recipe(
    method: str, data: str, seed: int, epochs: int, root: str, budget: str = "recipe"
) -> L.Trainer:
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
            *_budget_args(method, data, budget),
        ]
    )
    return cli.trainer


def _fit_supervised(data: str, seed: int, epochs: int, root: str, budget: str = "recipe") -> L.Trainer:
    """The SimCLR recipe's backbone, data (labelled images, no views) and kNN monitors; SGD 0.05, cosine.

    ``budget="cpu"``: the CPU budget's backbone, image size, batch, train subset and kNN bank cap instead.
    """
    config = yaml.safe_load(_recipe("SimCLR", data).read_text())
    model_args, data_args = config["model"]["init_args"], config["data"]["init_args"]
    knn_args = [c.get("init_args", {}) for c in config["trainer"]["callbacks"] if _is_knn(c)]
    if budget == "cpu":
        model_args = {
            **model_args,
            **{k: CPU_BUDGET[k] for k in ("backbone", "backbone_kwargs", "small_input")},
        }
        data_args = {**data_args, **{k: CPU_BUDGET[k] for k in ("image_size", "batch_size", "train_subset")}}
        knn_args = [_capped_bank(a) for a in knn_args]
    L.seed_everything(seed)
    warnings.filterwarnings("ignore", "ImageClassifier: pretrained=None")  # random init is the point
    model = SupervisedEncoder(
        backbone=model_args["backbone"],
        small_input=model_args["small_input"],
        in_channels=1,
        lr=0.05,
        warmup_epochs=0,
        backbone_kwargs=model_args.get("backbone_kwargs"),
    )
    kwargs = {k: v for k, v in data_args.items() if k != "views"}
    datamodule = (
        DigitsDataModule(**kwargs, seed=seed)
        if data == "digits"
        else FashionMNISTDataModule(**kwargs, seed=seed)
    )
    monitors: list[L.Callback] = [KNNMonitor(**{**a, "every_n_epochs": epochs}) for a in knn_args]
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


def run_one(name: str, data: str, seed: int, epochs: int, budget: str = "recipe") -> dict[str, Any]:
    """One training run: correct held-out predictions before/after, their count, minutes, steps, banks."""
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        if name == SUPERVISED:
            trainer = _fit_supervised(data, seed, epochs, tmp, budget)
        else:
            trainer = _fit_recipe(name, data, seed, epochs, tmp, budget)
        wall, cpu = (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60
    datamodule: Any = trainer.datamodule  # type: ignore[attr-defined]
    size = before = after = 0
    banks = []
    for monitor in (c for c in trainer.callbacks if isinstance(c, KNNMonitor)):  # type: ignore[attr-defined]
        history = dict(monitor.history)
        if max(history) != epochs - 1:
            raise RuntimeError(f"{name}: the {monitor.log_name} monitor last ran at epoch {max(history)}")
        n = len(datamodule.labelled_dataset(monitor.eval_split))
        size += n
        before += round(history[-1] * n)
        after += round(history[epochs - 1] * n)
        bank = len(datamodule.labelled_dataset(monitor.bank_split))  # as KNNMonitor._evaluate sizes it
        banks.append(bank if monitor.max_bank_size is None else min(bank, monitor.max_bank_size))
    return {
        "size": size,
        "before": before,
        "after": after,
        "wall": wall,
        "cpu": cpu,
        "steps": trainer.global_step,
        "banks": banks,
    }


def run(
    seeds: Sequence[int] = SEEDS,
    epochs: int = EPOCHS,
    methods: Sequence[str] | None = None,
    data: str = "digits",
    budget: str = "recipe",
) -> str:
    """The table: one row per encoder, held-out errors pooled over ``seeds``, ``epochs`` of training.

    ``budget``: "recipe" runs the recipes as written; "cpu" (fashion_mnist only) the ``CPU_BUDGET``.
    """
    if data not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {data!r}")
    _check_budget(data, budget)
    period = _monitor_period(data)
    if epochs < period or epochs % period:
        raise ValueError(
            f"epochs must be a multiple of {period} (the {data} recipes' kNN monitors run every {period}), "
            f"got {epochs}"
        )
    names = list(methods) if methods is not None else [*METHODS, SUPERVISED]
    results = {name: [run_one(name, data, seed, epochs, budget) for seed in seeds] for name in names}
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
    if budget == "cpu":
        knn = next(c.get("init_args", {}) for c in simclr["trainer"]["callbacks"] if _is_knn(c))
        banks = sorted({b for runs in results.values() for r in runs for b in r["banks"]})
        steps = sorted({r["steps"] for runs in results.values() for r in runs})
        cfg, k, tau = CPU_BUDGET, knn.get("k", 200), knn.get("temperature", 0.1)
        title = (
            f"{data}, CPU budget (the same for every row): {cfg['backbone']} (half width, small input), "
            f"{cfg['image_size']} px, a stratified train subset of {cfg['train_subset']} images per seed, "
            f"{epochs} epochs = {' / '.join(map(str, steps))} steps of batch {cfg['batch_size']}; the digits "
            f"recipes' heads; seeds {', '.join(map(str, seeds))} (each sets the weights, the train subset "
            f"and the held-out split); weighted kNN (k={k}, tau={tau}, bank = {' / '.join(map(str, banks))} "
            f"training images, max_bank_size {cfg['max_bank_size']}) errors on the {total // len(seeds)} "
            f"held-out images of each seed\n\n"
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
    parser.add_argument(
        "--budget",
        choices=BUDGETS,
        default="recipe",
        help="recipe: as written; cpu: CPU_BUDGET (fashion_mnist)",
    )
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below read their own arguments, not this script's
    print(run(args.seeds, args.epochs, args.methods, args.data, args.budget), flush=True)
