"""Augmentation policies on Fashion-MNIST: test accuracy per policy and label budget, and throughput.

``policy_accuracy``: the ``recipes/augment/fashion_mnist_*.yaml`` model (timm's 0.4M-parameter
``test_resnet``, SGD lr 0.05, batch 64) trained for the same fixed number of steps with each
augmentation: none (padded crop + flip only), AutoAugment's CIFAR-10 policy, RandAugment (N=2,
M=9), TrivialAugment, mixup (alpha 0.2, no policy) and the policy found by ``lightning-tl
augsearch`` on the 1,000-label subset (its validation split; the test split is never used in the
search). Two label budgets: a 1,000-image class-stratified subset and all 60,000 train images
(val_size 0). Each cell: mean (and spread) of the test accuracy over 3 seeds (seed of the
initialisation, the subset, the order and the augmentation). Runs go two at a time, one thread each.

``policy_throughput``: per-sample images/s on one thread (= one DataLoader worker) of each policy
with our datamodule's supervised pipeline (crop, flip, policy, normalise) on uint8 tensors, for
28 px grayscale Fashion-MNIST and 64 px RGB photo crops; timm's own PIL RandAugment for reference
(``rand-m9-mstd0.5``: timm's ``inc1`` op set crashes on Pillow 13, installed here, when the
sampled level reaches 10: ``PosterizeIncreasing`` then asks PIL for 0 bits);
and the on-device batched mixup/CutMix (batch 256).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks._timing import interleaved_medians, markdown_table

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "augment" / "fashion_mnist_none.yaml"
STEPS = 150
SEEDS = (0, 1, 2)
AUGMENT = "--data.init_args.augment.init_args"  # the recipe's SupervisedAugment
ARMS = {
    "none": [f"{AUGMENT}.policy=none"],
    "AutoAugment (CIFAR-10 policy)": [f"{AUGMENT}.policy=autoaugment:cifar10"],
    "RandAugment N=2 M=9": [f"{AUGMENT}.policy=randaugment:num_ops=2,magnitude=9"],
    "TrivialAugment": [f"{AUGMENT}.policy=trivialaugment"],
    "mixup alpha=0.2": [f"{AUGMENT}.policy=none", f"{AUGMENT}.mixup_alpha=0.2"],
}
BUDGETS = {
    "1,000 labels": ["--data.init_args.train_subset=1000"],
    "60,000 labels": ["--data.init_args.train_subset=null", "--data.init_args.val_size=0"],
}
SEARCH = {"trials": 4, "steps": 60, "eta": 2, "rungs": 2}  # 4 x 60 + 2 x 120 proxy steps


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _test_accuracy(args: list[str]) -> tuple[float, float]:
    """(test accuracy, CPU seconds) of one training run of the recipe with ``args``; in a worker process."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from lightning_tl.cli import build_cli

    start = _cpu()
    cli = build_cli(
        [
            "--config",
            str(RECIPE),
            f"--trainer.max_steps={STEPS}",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.check_val_every_n_epoch=1000000",
            "--trainer.num_sanity_val_steps=0",
            *args,
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return float(result[0]["test_acc"]), _cpu() - start


def _search() -> tuple[str, float]:
    torch.set_num_threads(1)
    from lightning_tl.augsearch import SEARCH_OPS, augment_search

    gray_ops = tuple(op for op in SEARCH_OPS if op != "Color")  # saturation does nothing on 1 channel
    result = augment_search(
        str(RECIPE),
        trials=SEARCH["trials"],
        steps=SEARCH["steps"],
        eta=SEARCH["eta"],
        rungs=SEARCH["rungs"],
        ops=gray_ops,
        seed=0,
        overrides=["--data.init_args.val_size=1000"],
        baseline=None,  # a first run with the "none" baseline among the candidates picked "none"
    )
    print(result.table(), file=sys.stderr, flush=True)
    return result.best_spec, result.cpu_minutes


def _jobs(arms: dict[str, list[str]], budget: str) -> list[tuple[str, str, int, list[str]]]:
    """(arm, budget, seed, args) of one label budget, seed-major."""
    return [
        (
            arm,
            budget,
            seed,
            [*args, *BUDGETS[budget], f"--seed_everything={seed}", f"--data.init_args.seed={seed}"],
        )
        for seed in SEEDS
        for arm, args in arms.items()
    ]


def _logged_run(job: tuple[str, str, int, list[str]]) -> tuple[float, float]:
    acc, seconds = _test_accuracy(job[3])
    line = f"[policy_accuracy] {job[0]} | {job[1]} | seed {job[2]}: {acc:.4f} ({seconds:.0f} CPU-s)"
    print(line, file=sys.stderr, flush=True)
    return acc, seconds


def run_accuracy() -> str:
    os.environ["OMP_NUM_THREADS"] = "1"
    ctx = mp.get_context("spawn")
    jobs: list[tuple[str, str, int, list[str]]] = []
    pending: list[Any] = []  # AsyncResults, in the order of jobs
    with ctx.Pool(2, maxtasksperchild=1) as pool:  # the search runs beside the fixed arms' trainings
        search = pool.apply_async(_search)

        def submit(new: list[tuple[str, str, int, list[str]]]) -> None:
            jobs.extend(new)
            pending.extend(pool.apply_async(_logged_run, (job,)) for job in new)

        small, full = BUDGETS
        submit(_jobs(ARMS, small))  # the 1,000-label column first, the searched arm as soon as it exists
        spec, search_minutes = search.get()
        print(f"[policy_accuracy] searched policy: {spec}", file=sys.stderr, flush=True)
        searched = {"searched (augsearch)": [f"{AUGMENT}.policy={spec}"]}
        arms = {**ARMS, **searched}
        submit(_jobs(searched, small))
        submit(_jobs(ARMS, full))
        submit(_jobs(searched, full))
        results = [r.get() for r in pending]
    accuracy: dict[tuple[str, str], list[float]] = {}
    cpu = 0.0
    for (arm, budget, _, _), (acc, seconds) in zip(jobs, results, strict=True):
        accuracy.setdefault((arm, budget), []).append(acc)
        cpu += seconds
    rows: list[list[object]] = []
    for arm in arms:
        cells = []
        for budget in BUDGETS:
            values = accuracy[(arm, budget)]
            cells.append(f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}")
        rows.append([arm, *cells])
    title = (
        f"Fashion-MNIST test accuracy (%), mean ± std over seeds {list(SEEDS)}; timm test_resnet "
        "(0.4M params), "
        f"{STEPS} SGD steps of batch 64 for every cell ({STEPS * 64 // 1000} epochs of the 1,000-image "
        f"subset, {STEPS * 64 / 60000:.2f} epochs of the 60,000). Training CPU time of the table: "
        f"{cpu / 60:.1f} CPU-minutes; the search "
        f"({SEARCH['trials']} random policies, successive halving "
        f"{SEARCH['steps']}->{SEARCH['steps'] * SEARCH['eta']} steps, 1,000 labels, 1,000-image val split): "
        f"{search_minutes:.1f} CPU-minutes.\n\nsearched policy: `{spec}`\n\n"
    )
    return title + markdown_table(["policy", *BUDGETS], rows)


THROUGHPUT_POLICIES = (
    "none", "autoaugment:cifar10", "autoaugment:imagenet", "randaugment", "trivialaugment", "augmix",
    "rand-m9-mstd0.5", "rand-m9-mstd0.5-inc1", "original", "augmix-m3-w3-d2",
)  # fmt: skip


def run_throughput(items: int = 512) -> str:
    from torchvision.transforms import v2

    from benchmarks.augmentation_throughput import photo_crops
    from lightning_tl.augment import BatchMixing, SupervisedAugment, normalize
    from lightning_tl.datamodules import FashionMNISTDataModule

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gray = FashionMNISTDataModule(train_subset=items).splits()["train"].images[:items]  # type: ignore[attr-defined]
    rgb = photo_crops(items, 64)

    def per_sample(spec: str, images: torch.Tensor) -> v2.Compose:
        c, s = images.shape[1], images.shape[-1]
        return v2.Compose([*SupervisedAugment(spec).steps(s), normalize(c, [0.5], [0.5])])

    def loop(fn: Callable[[Any], Any], images: Sequence[Any] | torch.Tensor) -> Callable[[], object]:
        return lambda: [fn(img) for img in images]

    rows: list[list[object]] = []
    for spec in THROUGHPUT_POLICIES:
        fns = [loop(per_sample(spec, gray), gray), loop(per_sample(spec, rgb), rgb)]
        t_gray, t_rgb = interleaved_medians(fns, repeats=3, warmup=1)
        rows.append([f"`{spec}`", f"{items / t_gray:.0f}", f"{items / t_rgb:.0f}"])
    try:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        timm_ra = rand_augment_transform("rand-m9-mstd0.5", {"img_mean": (128, 128, 128)})
        timm_gray = rand_augment_transform("rand-m9-mstd0.5", {"img_mean": 128})  # L images: int fill
        pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in rgb]
        pil_gray = [Image.fromarray(img[0].numpy()) for img in gray]
        t_gray, t_rgb = interleaved_medians(
            [loop(timm_gray, pil_gray), loop(timm_ra, pil)], repeats=3, warmup=1
        )
        rows.append(
            [
                "timm's own PIL `rand-m9-mstd0.5` (policy only: no crop/normalise)",
                f"{items / t_gray:.0f}",
                f"{items / t_rgb:.0f}",
            ]
        )
    except ImportError:
        pass
    torch.set_num_threads(threads)
    batch = torch.rand(256, 3, 64, 64)
    labels = torch.randint(0, 10, (256,))
    mixes = {"mixup": BatchMixing(10, mixup_alpha=0.2), "CutMix": BatchMixing(10, cutmix_alpha=1.0)}
    for name, mixing in mixes.items():
        (t,) = interleaved_medians([partial(mixing, batch, labels, 0)], repeats=10, warmup=2)
        rows.append([f"{name}, per batch of 256 (64 px RGB), {threads} threads", "", f"{256 / t:.0f}"])
    title = (
        f"Augmentation throughput, images/s per worker (one thread), {items} images, median of 3 interleaved "
        "repeats; pipeline = padded random crop + flip + policy + normalise on uint8 tensors\n\n"
    )
    return title + markdown_table(["policy", "28 px gray (Fashion-MNIST)", "64 px RGB (photo crops)"], rows)


if __name__ == "__main__":
    print(run_accuracy() if sys.argv[1:] == ["accuracy"] else run_throughput())
