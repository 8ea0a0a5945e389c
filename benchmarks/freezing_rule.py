"""Which freezing strategy wins by labels per class and domain distance: the evidence for ``"auto"``.

``python -m benchmarks.run freeze_rule`` (meant for one thread: ``OMP_NUM_THREADS=1``). The earlier
transfer tables (:mod:`benchmarks.freezing` on a CPU, :mod:`benchmarks.transfer_gpu` on an H100) start
at 100 labelled images of one near target; this one covers the few-label regime and a far domain, the
two places where the classic rule (Yosinski et al. 2014; Kornblith et al. 2019 for the protocol) says
a frozen backbone should win.

- Source model: a quarter-width ResNet-18 (timm ``resnet18`` with ``channels=[16, 32, 64, 128]``,
  small-input stem, 16 px, 1 channel, 0.7M parameters), supervised on all ~29,500 training images of
  Fashion-MNIST classes 0-4 for ``PRETRAIN_EPOCHS`` epochs (AdamW 1e-3, cosine). The checkpoint is
  cached (``FREEZE_RULE_CACHE``, default ``runs/freeze_rule``) with its test accuracy on classes 0-4.
- Targets: (a) near: Fashion-MNIST classes 5-9 (500 validation images held out of their training
  images; all 5,000 test images); (b) far: scikit-learn's digits (10 classes, 8x8 upsampled to 16 px,
  its own normalisation; stratified 70/15/15 split drawn with the seed).
- ``PER_CLASS`` labels per class (a stratified ``train_subset`` drawn with the seed), ``SEEDS`` seeds
  (labelled subset, split, head initialisation and data order); each strategy tries every lr of its
  ``LRS`` row, then (a second pass) its ``EXTRA_LRS``, for ``steps_and_batch(labels)`` AdamW steps
  (cosine); the lr with the best validation accuracy gives the test accuracy, which is reported once
  per (target, size, seed, strategy).

Every finished selection is appended to ``results.jsonl`` (first pass) or ``results_extra_lr.jsonl``
(second pass) in the cache folder, so an interrupted table resumes where it stopped;
``FREEZE_RULE_FRESH=1`` ignores earlier results.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch.utils.data import DataLoader

from benchmarks._timing import markdown_table
from benchmarks.freezing import SOURCE, TARGET, FashionMNISTClasses, cpu_trainer, strategy_callback
from lightning_tl.callbacks.freezing import choose_strategy
from lightning_tl.datamodules import DigitsDataModule, VisionDataModule
from lightning_tl.datamodules.datasets import ImageSource
from lightning_tl.modules import ImageClassifier

SIZE = 16
NET: dict[str, Any] = {
    "backbone": "timm/resnet18",
    "backbone_kwargs": {"channels": [16, 32, 64, 128]},
    "small_input": True,
    "in_channels": 1,
}
PRETRAIN_EPOCHS = int(os.environ.get("PRETRAIN_EPOCHS", "6"))
PER_CLASS = tuple(int(n) for n in os.environ.get("PER_CLASS", "1,2,5,10,20,50,100").split(","))
SEEDS = tuple(int(n) for n in os.environ.get("SEEDS", "0,1,2").split(","))
STRATEGIES = tuple(os.environ.get("STRATEGIES", "linear_probe,partial,full").split(","))
TARGETS = tuple(os.environ.get("TARGETS", "fashion_mnist_5-9,digits").split(","))
LRS = {
    "linear_probe": (1e-2, 3e-2, 1e-1),
    "partial": (1e-4, 3e-4, 1e-3),
    "full": (1e-4, 3e-4, 1e-3),
    "gradual": (3e-4, 1e-3),
}
#: A second pass adds one lr above each grid (the first pass picked its top lr for partial and full in
#: 41 of 42 cells each, and for the probe in 26 of 42); its run replaces the first pass's only when its
#: validation accuracy is higher, so the result is the selection over the whole extended grid.
EXTRA_LRS = {"linear_probe": (3e-1,), "partial": (3e-3,), "full": (3e-3,), "gradual": (3e-3,)}
CACHE = Path(os.environ.get("FREEZE_RULE_CACHE", "runs/freeze_rule"))
TEXTBOOK = {  # the thresholds "auto" had before this table (probe < 500 / 50, partial < 5,000 / 500)
    "partial_min_samples": 500,
    "partial_min_per_class": 50,
    "full_min_samples": 5_000,
    "full_min_per_class": 500,
}
_LOADED: dict[tuple[Any, ...], dict[str, ImageSource]] = {}

warnings.filterwarnings("ignore", message=".*randomly initialised.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


class _CachedClasses(FashionMNISTClasses):
    """Reads Fashion-MNIST once per (classes, seed) for all runs of the table."""

    def _load_splits(self) -> dict[str, ImageSource]:
        key = (tuple(self.classes), self.seed)
        if key not in _LOADED:
            _LOADED[key] = super()._load_splits()
        return dict(_LOADED[key])


def steps_and_batch(labels: int) -> tuple[int, int]:
    """(optimizer steps, batch size): 60 steps up to 200 labels, 120 above; batches of up to 32."""
    return (60 if labels <= 200 else 120), min(32, labels)


def target_data(target: str, per_class: int | None, seed: int, batch: int = 32) -> VisionDataModule:
    if target == "fashion_mnist_5-9":
        labels = None if per_class is None else per_class * len(TARGET)
        return _CachedClasses(
            TARGET, image_size=SIZE, batch_size=batch, val_size=1000, train_subset=labels, seed=seed
        )
    if target == "digits":
        labels = None if per_class is None else per_class * 10
        return DigitsDataModule(image_size=SIZE, batch_size=batch, train_subset=labels, seed=seed)
    raise ValueError(f"unknown target {target!r}; use 'fashion_mnist_5-9' or 'digits'.")


def accuracy(model: ImageClassifier, data: VisionDataModule, split: str) -> float:
    loader = DataLoader(data.labelled_dataset(split), batch_size=500)
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += y.numel()
    return correct / total


def source_checkpoint() -> tuple[str, float, float]:
    """(path, test accuracy on classes 0-4, minutes) of the cached source model; trains it if missing."""
    path, meta = CACHE / f"source_{PRETRAIN_EPOCHS}ep.ckpt", CACHE / f"source_{PRETRAIN_EPOCHS}ep.json"
    if path.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return str(path), info["test_acc"], info["minutes"]
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(0)
    data = _CachedClasses(SOURCE, image_size=SIZE, batch_size=128, val_size=1000)
    model = ImageClassifier(**NET, num_classes=len(SOURCE), optimizer="adamw", lr=1e-3)
    trainer = cpu_trainer(max_epochs=PRETRAIN_EPOCHS)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    acc, minutes = accuracy(model, data, "test"), (time.perf_counter() - start) / 60
    meta.write_text(json.dumps({"test_acc": acc, "minutes": minutes, "epochs": PRETRAIN_EPOCHS}))
    return str(path), acc, minutes


def finetune(path: str, target: str, per_class: int, seed: int, strategy: str, lr: float) -> ImageClassifier:
    data = target_data(target, per_class, seed)
    steps, data.batch_size = steps_and_batch(len(cast(Sized, data.labelled_dataset("train"))))
    torch.manual_seed(seed)
    model = ImageClassifier(
        **NET, pretrained=path, num_classes=data.num_classes, optimizer="adamw", lr=lr, weight_decay=0.0
    )
    cpu_trainer(max_steps=steps, max_epochs=-1, callbacks=[strategy_callback(strategy, steps)]).fit(
        model, datamodule=data
    )
    return model


def select_and_test(
    path: str, target: str, per_class: int, seed: int, strategy: str, lrs: tuple[float, ...]
) -> dict[str, Any]:
    """Every lr of the strategy's grid; the test accuracy of the one best on validation."""
    data = target_data(target, per_class, seed)
    start, best, best_model, val = time.perf_counter(), 0.0, None, {}
    for lr in lrs:  # the first lr of the best validation accuracy
        model = finetune(path, target, per_class, seed, strategy, lr)
        val[lr] = accuracy(model, data, "val")
        if best_model is None or val[lr] > val[best]:
            best, best_model = lr, model
    assert best_model is not None
    return {
        "target": target,
        "per_class": per_class,
        "seed": seed,
        "strategy": strategy,
        "labels": len(cast(Sized, data.labelled_dataset("train"))),
        "num_classes": data.num_classes,
        "lr": best,
        "val": val[best],
        "val_by_lr": {str(k): v for k, v in val.items()},
        "test": accuracy(best_model, data, "test"),
        "seconds": time.perf_counter() - start,
    }


def _load(results: Path) -> dict[tuple[str, int, int, str], dict[str, Any]]:
    done = {}
    if results.is_file() and not os.environ.get("FREEZE_RULE_FRESH"):
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done[(r["target"], r["per_class"], r["seed"], r["strategy"])] = r
    return done


def _cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def _run_pass(path: str, results: Path, grid: Mapping[str, tuple[float, ...]]) -> dict[tuple[Any, ...], Any]:
    """Every (target, size, seed, strategy) of the table at ``grid``'s lrs; resumes from ``results``."""
    done = _load(results)
    for target in TARGETS:
        for per_class in PER_CLASS:
            for seed in SEEDS:
                for strategy in STRATEGIES:
                    key = (target, per_class, seed, strategy)
                    if key not in done:
                        done[key] = select_and_test(path, target, per_class, seed, strategy, grid[strategy])
                        with results.open("a") as f:
                            f.write(json.dumps(done[key]) + "\n")
                        r = done[key]
                        print(f"{key}: lr {r['lr']:g} val {r['val']:.3f} test {r['test']:.3f}", flush=True)
    return done


def run() -> str:
    start = time.perf_counter()
    path, source_acc, source_min = source_checkpoint()
    first = _run_pass(path, CACHE / "results.jsonl", LRS)
    extra = _run_pass(path, CACHE / "results_extra_lr.jsonl", EXTRA_LRS)
    done = {k: extra[k] if extra[k]["val"] > r["val"] else r for k, r in first.items()}
    seconds = sum(r["seconds"] for r in [*first.values(), *extra.values()] if r["target"] in TARGETS)
    picked = " ".join(
        f"{s} {lr:g}: {n}/{sum(r['strategy'] == s for r in done.values())};"
        for (s, lr), n in sorted(Counter((r["strategy"], r["lr"]) for r in done.values()).items())
    )
    rows = []
    for target in TARGETS:
        for per_class in PER_CLASS:
            runs = {s: [done[(target, per_class, seed, s)] for seed in SEEDS] for s in STRATEGIES}
            test = {s: [r["test"] for r in rs] for s, rs in runs.items()}
            labels, classes = runs[STRATEGIES[0]][0]["labels"], runs[STRATEGIES[0]][0]["num_classes"]
            row: list[object] = [target, per_class, f"{labels:,}", *(_cell(test[s]) for s in STRATEGIES)]
            if "full" in test:  # paired over seeds: the same labelled subset and initialisation
                for other in (s for s in STRATEGIES if s != "full"):
                    row.append(_cell([f - o for f, o in zip(test["full"], test[other], strict=True)]))
            row.append(max(STRATEGIES, key=lambda s: statistics.mean(test[s])))
            row.append(choose_strategy(labels, classes, TEXTBOOK))
            row.append(choose_strategy(labels, classes))
            rows.append(row)
    title = (
        f"Strategy by labels per class and domain: test accuracy (%) mean ± std over seeds {list(SEEDS)}; "
        f"quarter-width ResNet-18 (timm, channels 16-128, 16 px, 0.7M params) pre-trained {PRETRAIN_EPOCHS} "
        f"epochs on Fashion-MNIST classes 0-4 (test acc {source_acc:.3f} there; {source_min:.1f} min); "
        f"lr per strategy picked on validation from {LRS} plus {EXTRA_LRS} (picked: {picked}); "
        "60 AdamW steps (120 above 200 labels) of "
        f"batch min(32, labels); {torch.get_num_threads()} thread(s); fine-tuning runs {seconds / 60:.1f} "
        f"min, this call {(time.perf_counter() - start) / 60:.1f} min\n\n"
    )
    header = [
        "target",
        "labels/class",
        "labels",
        *STRATEGIES,
        *(f"full - {s} (points)" for s in STRATEGIES if s != "full" and "full" in STRATEGIES),
        "best mean",
        "textbook rule picks",
        "auto picks",
    ]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
