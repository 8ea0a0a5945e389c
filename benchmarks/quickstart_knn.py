"""Table (c): kNN accuracy of the quickstart's encoder, randomly initialised vs after SimCLR, over seeds.

Runs the real quickstart recipe (``recipes/simclr/digits.yaml``) through the CLI once per seed, each in
a temporary directory, and reads its KNNMonitor histories (epoch -1 = the randomly initialised encoder,
before the first step). Each seed sets both ``seed_everything`` (weight initialisation, the module's
random numbers) and the datamodule's ``seed`` (which 270 images are validation and which 270 are test,
and the view stream): with held-out splits this small one image is 0.37 points, so a single split
says little, and the table pools the 540 held-out images of every run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import Callback

from benchmarks._timing import markdown_table
from lightning_tl.callbacks import KNNMonitor
from lightning_tl.cli import build_cli

RECIPE = Path(__file__).resolve().parents[1] / "recipes/simclr/digits.yaml"
SEEDS = (0, 1, 2, 3, 4)


@dataclass
class SplitResult:
    """Correct predictions of the random-init and trained encoder on one held-out split of one run."""

    size: int
    before: int
    after: int


def run_seed(seed: int, extra_args: Sequence[str] = ()) -> tuple[dict[str, SplitResult], float, int, int]:
    """One quickstart run with ``seed`` for weights and split: results per split, minutes, steps, epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cli = build_cli(
            [
                "fit",
                "--config",
                str(RECIPE),
                f"--seed_everything={seed}",
                f"--data.init_args.seed={seed}",
                f"--trainer.default_root_dir={tmp}",
                "--trainer.enable_progress_bar=false",
                *extra_args,
            ]
        )
        minutes = (time.perf_counter() - start) / 60
    results: dict[str, SplitResult] = {}
    epochs = 0
    # Trainer.callbacks is assigned in Trainer.__init__ (by its CallbackConnector) but not declared on the
    # class, so mypy cannot see it
    callbacks: list[Callback] = cli.trainer.callbacks  # type: ignore[attr-defined]
    for monitor in (c for c in callbacks if isinstance(c, KNNMonitor)):
        size = len(cli.datamodule.labelled_dataset(monitor.eval_split))
        history = dict(monitor.history)
        epochs = max(history) + 1
        results[monitor.eval_split] = SplitResult(
            size, round(history[-1] * size), round(history[max(history)] * size)
        )
    return results, minutes, cli.trainer.global_step, epochs


def _cell(before: int, after: int, size: int) -> str:
    return f"{before / size:.3f} -> {after / size:.3f}"


def run(seeds: Sequence[int] = SEEDS, extra_args: Sequence[str] = ()) -> str:
    rows: list[list[object]] = []
    total = {"size": 0, "before": 0, "after": 0}
    improved = 0
    steps = epochs = 0
    for seed in seeds:
        results, minutes, steps, epochs = run_seed(seed, extra_args)
        parts = results.values()
        held = SplitResult(*(sum(getattr(r, f) for r in parts) for f in ("size", "before", "after")))
        for field in total:
            total[field] += getattr(held, field)
        improved += held.after > held.before
        cells = [_cell(r.before, r.after, r.size) for r in results.values()]
        errors = f"{held.size - held.before} -> {held.size - held.after}"
        rows.append([seed, *cells, _cell(held.before, held.after, held.size), errors, f"{minutes:.1f}"])
    n, before, after = total["size"], total["before"], total["after"]
    rows.append(
        [
            "all",
            *([""] * len(results)),
            f"error {100 * (1 - before / n):.1f}% -> {100 * (1 - after / n):.1f}%",
            f"{n - before} -> {n - after} of {n}; better on {improved} of {len(seeds)} seeds",
            "",
        ]
    )
    split_names = [f"kNN {name} ({r.size})" for name, r in results.items()]
    title = (
        f"Quickstart (`{RECIPE.relative_to(RECIPE.parents[2])}`"
        + (f" with {' '.join(extra_args)}" if extra_args else "")
        + f"): weighted kNN accuracy of the random-init encoder -> after SimCLR ({epochs} epochs, {steps} "
        "steps); each seed sets the weights and the split\n\n"
    )
    header = ["seed", *split_names, "held-out pooled", "held-out errors", "minutes"]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
