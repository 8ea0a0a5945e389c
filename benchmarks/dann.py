"""DANN tables: target test accuracy of source-only, DANN and train-on-target, mean +- std over seeds.

Fashion-MNIST -> Fashion-MNIST-M and digits -> digits-M (:mod:`lightning_tl.datamodules.blended`),
as the DANN paper's MNIST -> MNIST-M (Ganin et al., JMLR 2016, Table 2: 52.25 -> 76.66). All three
rows train the same :class:`~lightning_tl.modules.DANN` module (the paper's small CNN, the same
optimizer, schedule and number of steps) on a :class:`DomainAdaptationDataModule`:

* source only: ``adversarial=False`` on (source, target); the target batches are not used;
* DANN: ``adversarial=True`` on (source, target): unlabelled target images;
* train on target: ``adversarial=False`` on (target, target): target labels (the upper bound).

Accuracy is measured on the target domain's test split (blended versions of the source test images,
as MNIST-M's test set is made from MNIST's). Validation is off during training (no model selection).
Run: ``OMP_NUM_THREADS=1 LTL_BENCH_WORKERS=3 nice -n 10 python -m benchmarks.run dann_digits``. Runs are
independent and seeded, so ``LTL_BENCH_WORKERS`` (processes running them side by side) does not change
the numbers, only the wall time.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from typing import Any

import lightning as L
import torch

from benchmarks._timing import markdown_table
from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule, FashionMNISTDataModule
from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule, FashionMNISTMDataModule
from lightning_tl.modules import DANN
from lightning_tl.nn import SmallConvNet

SEEDS = (0, 1, 2)
METHODS = ("source only", "DANN", "train on target")
#: steps, batch size per domain and learning rate of each table (one budget for all three rows)
SETTINGS: dict[str, dict[str, Any]] = {
    "fashion_mnist": {"steps": 400, "batch_size": 64, "lr": 0.01},
    "digits": {"steps": 300, "batch_size": 64, "lr": 0.01},
}


def _domains(dataset: str, batch_size: int) -> tuple[VisionDataModule, VisionDataModule]:
    if dataset == "fashion_mnist":
        return (
            FashionMNISTDataModule(rgb=True, batch_size=batch_size),
            FashionMNISTMDataModule(batch_size=batch_size),
        )
    return (
        DigitsDataModule(rgb=True, image_size=28, batch_size=batch_size),
        DigitsMDataModule(image_size=28, batch_size=batch_size),
    )


@torch.no_grad()
def target_test_accuracy(model: DANN, target: VisionDataModule) -> float:
    """Top-1 accuracy of ``model`` on the target domain's test split (eval mode)."""
    model.eval()
    correct = total = 0
    for x, y in target.test_dataloader():
        correct += int((model(x).argmax(1) == y).sum())
        total += y.numel()
    return correct / total


def run_one(dataset: str, method: str, seed: int) -> float:
    """Train one configuration and return its target test accuracy."""
    cfg = SETTINGS[dataset]
    source, target = _domains(dataset, cfg["batch_size"])
    data = DomainAdaptationDataModule(target if method == "train on target" else source, target)
    L.seed_everything(seed, verbose=False)
    model = DANN(
        backbone=SmallConvNet(in_chans=3),
        classifier_hidden=[100],
        domain_hidden=[100],
        domain_dropout=0.0,
        adversarial=method == "DANN",
        lr=cfg["lr"],
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=cfg["steps"],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return target_test_accuracy(model, target)


def table(dataset: str) -> str:
    cfg = SETTINGS[dataset]
    start = time.perf_counter()
    jobs = [(dataset, method, seed) for method in METHODS for seed in SEEDS]
    workers = int(os.environ.get("LTL_BENCH_WORKERS", "1"))
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.starmap(run_one, jobs)
    else:
        results = [run_one(*job) for job in jobs]
    rows = []
    for i, method in enumerate(METHODS):
        accs = [100 * a for a in results[i * len(SEEDS) : (i + 1) * len(SEEDS)]]
        runs = ", ".join(f"{a:.1f}" for a in accs)
        rows.append([method, f"{statistics.mean(accs):.2f} +- {statistics.stdev(accs):.2f}", runs])
    minutes = (time.perf_counter() - start) / 60
    names = {"fashion_mnist": "Fashion-MNIST -> Fashion-MNIST-M", "digits": "digits -> digits-M"}
    title = (
        f"{names[dataset]}: target test accuracy (%), SmallConvNet (the paper's MNIST CNN), "
        f"{cfg['steps']} SGD steps of {cfg['batch_size']} source + {cfg['batch_size']} target images, "
        f"lr {cfg['lr']} with DANN annealing, seeds {list(SEEDS)}; {minutes:.1f} min wall time with "
        f"{workers} process(es)\n\n"
    )
    return title + markdown_table(["method", "target test acc (mean +- std)", "per seed"], rows)


def run_fashion_mnist() -> str:
    return table("fashion_mnist")


def run_digits() -> str:
    return table("digits")


if __name__ == "__main__":
    import sys

    dataset, method, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(f"{dataset} {method} seed {seed}: {100 * run_one(dataset, method, seed):.2f}")
