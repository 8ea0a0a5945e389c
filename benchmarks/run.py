"""Print benchmark tables as markdown: ``python -m benchmarks.run [TABLE ...]`` (all CPU tables by default).

Tables: ``overhead``, ``augment``, ``views_threads`` (BatchViews on CPU threads), ``knn``,
``device_views`` (SimCLR and views), ``moco_overhead``, ``moco_knn`` (kNN after the same CPU budget:
MoCo, SimCLR, supervised), ``transfer``,
``freeze_speed``, ``probe_lr``, ``freeze_rule`` (layer freezing), ``dann_fashion_mnist``,
``dann_digits`` (DANN), ``da_digits``, ``da_fashion_mnist`` (DANN, CDAN, CDAN+E, MCC),
``policy_accuracy``, ``policy_throughput`` (augmentation policies), ``adapters``,
``adapter_latency`` (residual adapters), ``clip_zero_shot``, ``clip_overhead`` (CLIP), ``ssl_overhead``,
``ssl_knn`` (BYOL, SimSiam, Barlow Twins, VICReg, DINO beside SimCLR and MoCo), ``gpu`` (on a
CUDA card: on-device views, bf16 steps), ``transfer_gpu`` (freezing strategies with a strong source
model; meant for a GPU). Each script is named after the BENCHMARKS.md section of its tables.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

import torch

from benchmarks import (
    augmentation_policies,
    augmentation_throughput,
    clip,
    dann,
    device_views,
    domain_adaptation,
    freezing,
    freezing_rule,
    gpu,
    knn_same_budget,
    moco_overhead,
    quickstart_knn,
    residual_adapters,
    simclr_overhead,
    ssl_knn,
    ssl_overhead,
    transfer_gpu,
    views_threads,
)

TABLES: dict[str, Callable[[], str]] = {
    "overhead": simclr_overhead.run,
    "augment": augmentation_throughput.run,
    "views_threads": views_threads.run,
    "knn": quickstart_knn.run,
    "device_views": device_views.run,
    "moco_overhead": moco_overhead.run,
    "moco_knn": knn_same_budget.run,
    "transfer": freezing.run_transfer,
    "freeze_speed": freezing.run_speed,
    "probe_lr": freezing.run_probe_lr,
    "freeze_rule": freezing_rule.run,
    "dann_fashion_mnist": dann.run_fashion_mnist,
    "dann_digits": dann.run_digits,
    "da_digits": domain_adaptation.run_digits,
    "da_fashion_mnist": domain_adaptation.run_fashion_mnist,
    "policy_accuracy": augmentation_policies.run_accuracy,
    "policy_throughput": augmentation_policies.run_throughput,
    "adapters": residual_adapters.run,
    "adapter_latency": residual_adapters.run_latency,
    "clip_zero_shot": clip.run_zero_shot,
    "clip_overhead": clip.run_overhead,
    "ssl_overhead": ssl_overhead.run,
    "ssl_knn": ssl_knn.run,
    "gpu": gpu.run,
    "transfer_gpu": transfer_gpu.run,
}


GPU_TABLES = {"gpu", "transfer_gpu"}  # run only when named: they are sized for a CUDA card


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise SystemExit(f"unknown table(s) {unknown}; choose from {list(TABLES)}")
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    for name in names or [n for n in TABLES if n not in GPU_TABLES]:
        print(f"### {name}\n\n{TABLES[name]()}\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
