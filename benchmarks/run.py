"""Print benchmark tables as markdown: ``python -m benchmarks.run [TABLE ...]`` (all tables by default).

Tables: ``overhead``, ``augment``, ``knn``, ``device_views`` (SimCLR and views), ``moco_overhead``,
``moco_knn`` (MoCo), ``transfer``, ``freeze_speed``, ``probe_lr`` (layer freezing),
``clip_zero_shot``, ``clip_overhead`` (CLIP).
"""

from __future__ import annotations

import platform
import sys

import torch

from benchmarks import (
    augment,
    clip,
    device_views,
    freezing,
    moco_knn,
    moco_overhead,
    overhead,
    quickstart_knn,
)

TABLES = {
    "overhead": overhead.run,
    "augment": augment.run,
    "knn": quickstart_knn.run,
    "device_views": device_views.run,
    "moco_overhead": moco_overhead.run,
    "moco_knn": moco_knn.run,
    "transfer": freezing.run_transfer,
    "freeze_speed": freezing.run_speed,
    "probe_lr": freezing.run_probe_lr,
    "clip_zero_shot": clip.run_zero_shot,
    "clip_overhead": clip.run_overhead,
}


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise SystemExit(f"unknown table(s) {unknown}; choose from {list(TABLES)}")
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    for name in names or list(TABLES):
        print(f"### {name}\n\n{TABLES[name]()}\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
