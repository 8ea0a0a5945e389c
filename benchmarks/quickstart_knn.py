"""Table (c): kNN accuracy of the quickstart's encoder, randomly initialised vs after SimCLR.

Runs the real quickstart recipe (``recipes/simclr/digits.yaml``) through the CLI in a temporary
directory and reads the KNNMonitor history (epoch -1 = before training).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks._timing import markdown_table
from lightning_tl.callbacks import KNNMonitor
from lightning_tl.cli import build_cli

RECIPE = Path(__file__).resolve().parents[1] / "recipes/simclr/digits.yaml"


def run() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cli = build_cli(
            [
                "fit",
                "--config",
                str(RECIPE),
                f"--trainer.default_root_dir={tmp}",
                "--trainer.enable_progress_bar=false",
            ]
        )
        seconds = time.perf_counter() - start
    monitors = [c for c in cli.trainer.callbacks if isinstance(c, KNNMonitor)]
    histories = [dict(m.history) for m in monitors]
    last_epoch = max(histories[0])
    rows = [
        ["random init (before training)", *(f"{h[-1]:.3f}" for h in histories)],
        [f"SimCLR, after {last_epoch + 1} epochs", *(f"{h[last_epoch]:.3f}" for h in histories)],
    ]
    title = (
        f"Quickstart (`{RECIPE.relative_to(RECIPE.parents[2])}`): weighted kNN (k={monitors[0].k}) accuracy "
        f"on the digits splits (270 images each); the whole run took {seconds / 60:.1f} min\n\n"
    )
    header = ["encoder", *(f"{m.log_name} ({m.eval_split} split)" for m in monitors)]
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run())
