"""Residual-adapter benchmarks: a small multi-domain table in the shape of Rebuffi et al.'s, and latency.

Domains (``python -m benchmarks.run adapters``): one backbone, a quarter-width timm ResNet-18
(channels 16-128, small-input stem, 16 px, 1 channel), is pre-trained here with labels on
Fashion-MNIST classes 0-4 (5,000 images, 2 epochs) and saved to a local file. Then, per domain, with the
same budget for every column (STEPS optimizer steps of batch BATCH per domain, AdamW lr 1e-3, cosine):

* linear probe: frozen backbone (BN statistics included), new head (``FreezeSchedule("linear_probe")``);
* full fine-tuning: every weight trains (``ImageClassifier``);
* series / parallel adapters: ``AdapterResNet`` trained on both domains at once
  (``MultiDomainDataModule``, every step one batch of each domain), so one network serves both.

Domains: Fashion-MNIST classes 5-9 (1,000 labelled images; tested on 1,000 test images) and
scikit-learn's digits (1,257 training images upsampled to 16 px; tested on its 270 test images).
"Params" is the share of backbone parameters a domain adds (heads excluded: every column has one).

Latency (``python -m benchmarks.run adapter_latency``): inference time of a full-width ResNet-18
(batch 32, 3x64x64, eval, 1 thread): plain, with parallel adapters (unmerged) and merged.
"""

from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, TypedDict

import torch
import torchvision

from benchmarks._timing import markdown_table
from benchmarks.freezing import SOURCE, TARGET, FashionMNISTClasses, OptimizerSettings, cpu_trainer
from lightning_tl.callbacks import FreezeSchedule
from lightning_tl.datamodules import DigitsDataModule, MultiDomainDataModule, VisionDataModule
from lightning_tl.modules import AdapterResNet, ImageClassifier
from lightning_tl.nn import inject_adapters, merge_adapters, set_domain
from lightning_tl.nn.adapters import AdapterKind

SIZE = 16


class BackboneSettings(TypedDict):
    """The backbone arguments of ``ImageClassifier`` and ``AdapterResNet``."""

    backbone: str
    backbone_kwargs: dict[str, Any]


BACKBONE: BackboneSettings = {"backbone": "timm/resnet18", "backbone_kwargs": {"channels": [16, 32, 64, 128]}}
OPTIMIZER: OptimizerSettings = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0}
STEPS, BATCH = 250, 32
TEST_BATCH, TEST_IMAGES = 250, 1_000

warnings.filterwarnings("ignore", message=".*randomly initialised.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _domains() -> dict[str, VisionDataModule]:
    return {
        "fmnist_5-9": FashionMNISTClasses(
            TARGET, image_size=SIZE, batch_size=BATCH, val_size=1000, train_subset=1000
        ),
        "digits": DigitsDataModule(image_size=SIZE, batch_size=BATCH),
    }


def pretrain(path: str) -> float:
    """Supervised pre-training on Fashion-MNIST classes 0-4; saves a checkpoint; returns test accuracy."""
    torch.manual_seed(0)
    data = FashionMNISTClasses(SOURCE, image_size=SIZE, batch_size=64, val_size=1000, train_subset=5000)
    model = ImageClassifier(small_input=True, in_channels=1, num_classes=5, **BACKBONE, **OPTIMIZER)
    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(path)
    return _test(model, data)["test_acc"]


def _test(model: Any, data: Any) -> dict[str, float]:
    children = data.domains.values() if isinstance(data, MultiDomainDataModule) else [data]
    for child in children:
        child.batch_size = TEST_BATCH
    result = cpu_trainer(limit_test_batches=TEST_IMAGES // TEST_BATCH).test(
        model, datamodule=data, verbose=False
    )
    for child in children:
        child.batch_size = BATCH
    return {k: float(v) for r in result for k, v in r.items()}


def baseline(path: str, data: VisionDataModule, probe: bool) -> float:
    """Test accuracy of a linear probe (``probe``) or of full fine-tuning on one domain."""
    torch.manual_seed(0)
    model = ImageClassifier(
        pretrained=path,
        small_input=True,
        in_channels=1,
        num_classes=data.num_classes,
        **BACKBONE,
        **OPTIMIZER,
    )
    callbacks = [FreezeSchedule("linear_probe")] if probe else []
    cpu_trainer(max_steps=STEPS, max_epochs=-1, callbacks=callbacks).fit(model, datamodule=data)
    return _test(model, data)["test_acc"]


def adapters(
    path: str, domains: dict[str, VisionDataModule], kind: AdapterKind
) -> tuple[dict[str, float], float]:
    """Per-domain test accuracy of one multi-domain AdapterResNet, and one domain's parameter share."""
    torch.manual_seed(0)
    data = MultiDomainDataModule(domains)
    model = AdapterResNet(
        pretrained=path, small_input=True, in_channels=1, num_classes=data.num_classes, kind=kind,
        **BACKBONE, **OPTIMIZER,
    )  # fmt: skip
    cpu_trainer(max_steps=STEPS, max_epochs=-1).fit(model, datamodule=data)
    result = _test(model, data)
    return {d: result[f"test_acc/{d}"] for d in domains}, model.trainable_share(next(iter(domains)))


def run() -> str:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pretrained.ckpt")
        source_acc = pretrain(path)
        print(f"pre-trained: source test acc {source_acc:.3f}", file=sys.stderr, flush=True)
        domains = _domains()
        acc: dict[str, dict[str, float]] = {d: {} for d in domains}
        for name, data in domains.items():
            acc[name]["linear probe"] = baseline(path, data, probe=True)
            acc[name]["full fine-tuning"] = baseline(path, data, probe=False)
            print(f"{name}: {acc[name]}", file=sys.stderr, flush=True)
        share = {}
        for kind in ("series", "parallel"):
            per_domain, share[kind] = adapters(path, domains, kind)
            for name, value in per_domain.items():
                acc[name][f"{kind} adapters"] = value
            print(f"{kind}: {per_domain}", file=sys.stderr, flush=True)
    columns = ["linear probe", "full fine-tuning", "series adapters", "parallel adapters"]
    rows: list[list[str]] = [[d] + [f"{acc[d][c]:.3f}" for c in columns] for d in acc]
    rows.append(
        [
            "params / domain (% of backbone)",
            "0",
            "100",
            f"{100 * share['series']:.1f}",
            f"{100 * share['parallel']:.1f}",
        ]
    )
    minutes = (time.perf_counter() - start) / 60
    title = (
        f"Multi-domain adapters: quarter-width ResNet-18 ({SIZE} px) pre-trained on Fashion-MNIST classes "
        f"0-4 (5,000 images, 2 epochs; test acc {source_acc:.3f} there); per domain {STEPS} steps x "
        f"batch {BATCH}, AdamW lr 1e-3, cosine, for every column; test accuracy; "
        f"whole table {minutes:.1f} min\n\n"
    )
    return title + markdown_table(["domain", *columns], rows)


def run_latency(repeats: int = 40) -> str:
    """Inference time of plain, adapted (unmerged) and merged full-width ResNet-18, interleaved rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10).eval()
    adapted = inject_adapters(copy.deepcopy(plain), "parallel", ["a", "b"]).eval()
    with torch.no_grad():  # trained-looking adapters (fresh ones are zero)
        for p in adapted.parameters():
            if p.requires_grad and p.ndim == 4:
                p.normal_(0, 0.01)
    set_domain(adapted, "b")
    merged = merge_adapters(adapted).eval()
    x = torch.randn(32, 3, 64, 64)
    nets = [plain, adapted, merged]
    times: list[list[float]] = [[] for _ in nets]
    with torch.inference_mode():
        error = (merged(x) - adapted(x)).abs().max().item()
        scale = adapted(x).abs().max().item()
        for round_ in range(repeats + 3):
            for net, out in zip(nets, times, strict=True):
                start = time.perf_counter()
                net(x)
                if round_ >= 3:
                    out.append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    med = [statistics.median(t) for t in times]
    best = [min(t) for t in times]
    names = ("plain ResNet-18", "parallel adapters, unmerged", "merged")
    rows = [
        [name, f"{1000 * m:.1f}", f"{m / med[0]:.3f}", f"{1000 * b:.1f}", f"{b / best[0]:.3f}"]
        for name, m, b in zip(names, med, best, strict=True)
    ]
    title = (
        f"Inference latency, ResNet-18, batch 32 x 3x64x64, eval, 1 thread, {repeats} interleaved rounds "
        f"after 3 warm-up rounds; merged vs unmerged outputs: max |difference| {error:.1e} "
        f"(outputs up to {scale:.1f})\n\n"
    )
    header = ["network", "median ms / batch", "vs plain", "best ms / batch", "vs plain"]
    return title + markdown_table(header, rows)
