"""Domain adaptation tables: source only, DANN, CDAN, CDAN+E, MCC and train-on-target, mean +- std over seeds.

digits -> digits-M and Fashion-MNIST -> Fashion-MNIST-M (:mod:`lightning_tl.datamodules.blended`),
the MNIST -> MNIST-M setting of DANN (Ganin et al., JMLR 2016), CDAN (Long et al., NeurIPS 2018) and
MCC (Jin et al., ECCV 2020). Every row trains the same backbone (the DANN paper's MNIST CNN,
``SmallConvNet``), label MLP (768-100-10), SGD momentum 0.9, lr 0.01 with DANN's annealing and the
same number of steps of 64 source + 64 target images:

* source only: ``DANN(adversarial=False)``; the target batches are not used;
* DANN: domain MLP 768-100-1 through the reversal layer (coefficient ``2 / (1 + exp(-10 p)) - 1``);
* CDAN / CDAN+E: ``CDAN`` with the same domain MLP on the randomized multilinear map (1024 values:
  768 x 10 > 4096), without / with entropy conditioning;
* MCC: ``MCC`` alone (weight 1, temperature 2.5), no domain classifier;
* train on target: ``DANN(adversarial=False)`` on (target, target): the upper bound;
* only when named in ``LTL_DA_METHODS``: MCC+DANN and MCC+CDAN+E (``MCC(adversarial=True)``: MCC
  added to DANN's and CDAN+E's losses, the MCC paper's regulariser rows).

The score is top-1 accuracy on the target test split after the last step (no model selection).
Run: ``OMP_NUM_THREADS=1 LTL_BENCH_WORKERS=3 nice -n 10 python -m benchmarks.run da_digits`` (and
``da_fashion_mnist``). ``LTL_DA_STEPS`` and ``LTL_DA_SEEDS`` (e.g. ``0,1``) override the budget and
the seeds for a quick check, ``LTL_DA_METHODS`` (e.g. ``source only,MCC+DANN``) the rows; runs are
independent and seeded (a cell's number does not depend on which other cells run), so
``LTL_BENCH_WORKERS`` changes only the wall time. ``python -m benchmarks.domain_adaptation digits MCC 0``
runs one cell.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from typing import Any

import lightning as L

from benchmarks._timing import markdown_table
from benchmarks.dann import _domains, target_test_accuracy
from lightning_tl.datamodules import DomainAdaptationDataModule
from lightning_tl.modules import CDAN, DANN, MCC
from lightning_tl.nn import SmallConvNet

SEEDS = (0, 1, 2, 3, 4)
METHODS = ("source only", "DANN", "CDAN", "CDAN+E", "MCC", "train on target")
#: rows run only when named in ``LTL_DA_METHODS``: MCC as a regulariser of DANN and CDAN+E (the MCC
#: paper's DANN + MCC and CDAN + MCC), which did not help this from-scratch CNN (BENCHMARKS.md)
EXTRA_METHODS = ("MCC+DANN", "MCC+CDAN+E")
#: steps, batch size per domain and learning rate of each table (one budget for every row):
#: 2,000 steps are 100 epochs of the 1,257 digits (the DANN table's 300 were 15) and 2.1 of Fashion-MNIST
SETTINGS: dict[str, dict[str, Any]] = {
    "digits": {"steps": 2000, "batch_size": 64, "lr": 0.01},
    "fashion_mnist": {"steps": 2000, "batch_size": 64, "lr": 0.01},
}
NAMES = {"digits": "digits -> digits-M", "fashion_mnist": "Fashion-MNIST -> Fashion-MNIST-M"}


def _budget(dataset: str) -> tuple[int, tuple[int, ...]]:
    steps = int(os.environ.get("LTL_DA_STEPS", SETTINGS[dataset]["steps"]))
    seeds = os.environ.get("LTL_DA_SEEDS")
    return steps, tuple(int(s) for s in seeds.split(",")) if seeds else SEEDS


def build_model(method: str, lr: float) -> L.LightningModule:
    """The module of one row; every row shares backbone, heads' widths, optimizer and schedule."""
    common: dict[str, Any] = {
        "backbone": SmallConvNet(in_chans=3),
        "classifier_hidden": [100],
        "domain_hidden": [100],
        "domain_dropout": 0.0,
        "lr": lr,
    }
    if method in ("source only", "train on target"):
        return DANN(adversarial=False, **common)
    if method == "DANN":
        return DANN(**common)
    if method in ("CDAN", "CDAN+E"):
        return CDAN(conditioning="auto", entropy_conditioning=method == "CDAN+E", **common)
    if method == "MCC":
        return MCC(mcc_weight=1.0, temperature=2.5, **common)
    if method == "MCC+DANN":
        return MCC(mcc_weight=1.0, temperature=2.5, adversarial=True, **common)
    if method == "MCC+CDAN+E":
        return MCC(
            mcc_weight=1.0, temperature=2.5, adversarial=True, conditioning="auto",
            entropy_conditioning=True, **common,
        )  # fmt: skip
    raise ValueError(f"unknown method {method!r}; choose from {METHODS + EXTRA_METHODS}")


def _methods() -> tuple[str, ...]:
    """The rows to run: ``LTL_DA_METHODS`` (comma-separated names, extra rows too) or :data:`METHODS`."""
    names = os.environ.get("LTL_DA_METHODS")
    if not names:
        return METHODS
    chosen = tuple(n.strip() for n in names.split(","))
    unknown = [n for n in chosen if n not in METHODS + EXTRA_METHODS]
    if unknown:
        raise ValueError(f"LTL_DA_METHODS: unknown rows {unknown}; choose from {METHODS + EXTRA_METHODS}")
    return chosen


def run_one(dataset: str, method: str, seed: int, steps: int) -> float:
    """Train one configuration and return its target test accuracy."""
    cfg = SETTINGS[dataset]
    source, target = _domains(dataset, cfg["batch_size"])
    data = DomainAdaptationDataModule(target if method == "train on target" else source, target)
    L.seed_everything(seed, verbose=False)
    model = build_model(method, cfg["lr"])
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return target_test_accuracy(model, target)  # type: ignore[arg-type]


def table(dataset: str) -> str:
    cfg = SETTINGS[dataset]
    steps, seeds = _budget(dataset)
    start = time.perf_counter()
    methods = _methods()
    jobs = [(dataset, method, seed, steps) for method in methods for seed in seeds]
    workers = int(os.environ.get("LTL_BENCH_WORKERS", "1"))
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = pool.starmap(run_one, jobs)
    else:
        results = [run_one(*job) for job in jobs]
    accs = {
        m: [100 * a for a in results[i * len(seeds) : (i + 1) * len(seeds)]] for i, m in enumerate(methods)
    }
    means = {m: statistics.mean(a) for m, a in accs.items()}
    rows = []
    for method, values in accs.items():
        spread = f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        gain = f"{means[method] - means['source only']:+.1f}" if "source only" in means else ""
        gain = "" if method == "source only" else gain
        rows.append([method, f"{means[method]:.2f}{spread}", gain, ", ".join(f"{a:.2f}" for a in values)])
    minutes = (time.perf_counter() - start) / 60
    title = (
        f"{NAMES[dataset]}: target test accuracy (%), SmallConvNet (the DANN paper's MNIST CNN), {steps} SGD "
        f"steps of {cfg['batch_size']} source + {cfg['batch_size']} target images, lr {cfg['lr']} with DANN "
        f"annealing, seeds {list(seeds)}; {minutes:.1f} min wall time with {workers} process(es)\n\n"
    )
    summary = ""
    if {"MCC", "CDAN", "DANN", "source only"} <= set(means):
        order = means["MCC"] >= means["CDAN"] >= means["DANN"] > means["source only"]
        summary = (
            f"\n\nLiterature's order MCC >= CDAN >= DANN > source only: "
            f"{'holds' if order else 'does not hold'}; "
            f"DANN's gain over source only: {means['DANN'] - means['source only']:+.1f} points."
        )
    header = ["method", "target test acc (mean +- std)", "gain vs source only", "per seed"]
    return title + markdown_table(header, rows) + summary


def run_digits() -> str:
    return table("digits")


def run_fashion_mnist() -> str:
    return table("fashion_mnist")


if __name__ == "__main__":
    import sys

    dataset, method, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    steps = _budget(dataset)[0]
    print(f"{dataset} {method} seed {seed}, {steps} steps: {100 * run_one(dataset, method, seed, steps):.2f}")
