"""Print every benchmark table as markdown: ``python -m benchmarks.run [overhead|augment|knn ...]``."""

from __future__ import annotations

import platform
import sys

import torch

from benchmarks import augment, overhead, quickstart_knn

TABLES = {"overhead": overhead.run, "augment": augment.run, "knn": quickstart_knn.run}

from benchmarks import freezing  # noqa: E402

TABLES |= {
    "transfer": freezing.run_transfer,
    "freeze_speed": freezing.run_speed,
    "probe_lr": freezing.run_probe_lr,
}


def main(names: list[str]) -> None:
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    for name in names or list(TABLES):
        print(f"### {name}\n\n{TABLES[name]()}\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
