"""Table (g): on a CUDA card — on-device views checked and timed, SimCLR/MoCo steps in bf16.

One script for a lent GPU session (``python -m benchmarks.run gpu``), in four parts:

1. :class:`~lightning_tl.augment.BatchViews` on CUDA against the same call on the CPU
   (same per-image seeds: same crops, flips and random choices; values equal to float rounding),
   with bf16 output and grayscale input.
2. Two-view images/s of the SimCLR recipe at 32/64/96/224 px: batched on the card vs per-sample
   torchvision v2 on one CPU thread of the same machine (what one DataLoader worker does), and
   batched on that machine's CPU with all its threads (the compiled kernel where it builds).
3. Training-step throughput of SimCLR (ResNet-18 at 32 px with the small-input stem, ResNet-50 at
   224 px) in float32, bf16 autocast, and bf16 autocast + channels_last; the views' cost on the card
   as a fraction of the step; SimCLR and MoCo step time over the backbone+head step (method overhead).
4. A Lightning ``fit`` of SimCLR on Fashion-MNIST with ``precision="bf16-mixed"``: per-sample views
   in DataLoader workers vs on-device views (the view recipe's ``on_device``), and on-device views with the
   :class:`~lightning_tl.callbacks.ChannelsLast` callback: s/epoch and kNN accuracy.
   Needs the four Fashion-MNIST ``*-ubyte.gz`` files in ``$FMNIST_ROOT`` (else part 4 is skipped
   with a line saying so).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks._timing import markdown_table
from benchmarks.augmentation_throughput import photo_crops
from lightning_tl.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchViews,
    SimCLRViews,
    cpu_kernel,
    view_transform,
)
from lightning_tl.augment.counter_rng import derive_seeds
from lightning_tl.losses import nt_xent_loss
from lightning_tl.modules import MoCo, SimCLR

DEVICE = "cuda"  # a CPU smoke run of the script's logic sets this to "cpu"


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _cuda_seconds(fn: Callable[[], object], repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` on the card (synchronised before and after each call)."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_cuda_matches_cpu(n: int = 256, size: int = 64) -> str:
    """Part 1: the same seeds give the same views on CUDA and on the CPU."""
    images = photo_crops(n, size, seed=1)
    seeds = derive_seeds(7, n)
    spec = SimCLRViews(jitter_strength=1.0).specs(size, 3)[0]
    make = BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD)
    on_cpu = make(images, seeds)
    on_gpu = make(images.to(DEVICE), seeds.to(DEVICE))
    diffs = torch.stack([(c - g.cpu()).abs().flatten(1).amax(1) for c, g in zip(on_cpu, on_gpu, strict=True)])
    in_bf16 = BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, dtype=torch.bfloat16)
    bf16 = in_bf16(images.to(DEVICE), 7)
    gray = BatchViews(SimCLRViews().specs(size, 1), 1)(images[:, :1].to(DEVICE), seeds.to(DEVICE))
    rows = [
        ["max |CUDA - CPU| over all pixels (normalised units)", f"{diffs.max().item():.2e}"],
        ["views with max difference > 1e-3", f"{int((diffs > 1e-3).sum())} of {diffs.numel()}"],
        ["bf16 output dtype / finite", f"{bf16[0].dtype} / {all(bool(v.isfinite().all()) for v in bf16)}"],
        ["grayscale input -> views", f"{tuple(gray[0].shape)} {gray[0].device.type}"],
    ]
    return markdown_table(["check", "result"], rows)


def views_throughput(sizes: tuple[int, ...] = (32, 64, 96, 224), items: int = 2048, batch: int = 512) -> str:
    """Part 2: two-view images/s, batched on the card vs per-sample torchvision v2 on one CPU thread."""
    rows = []
    threads = torch.get_num_threads()
    for size in sizes:
        images = photo_crops(items, size)
        spec = SimCLRViews(jitter_strength=1.0).specs(size, 3)[0]
        one_view = view_transform(spec, 3, IMAGENET_MEAN, IMAGENET_STD)
        torch.set_num_threads(1)
        per = min(items, 256)
        start = time.perf_counter()
        for i in range(per):
            one_view(images[i]), one_view(images[i])
        cpu_rate = per / (time.perf_counter() - start)
        torch.set_num_threads(threads)
        on_cpu = BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD)

        def cpu_batches(make: BatchViews = on_cpu, images: Tensor = images) -> None:
            for s in range(0, min(items, 1024), 256):
                make(images[s : s + 256], s)

        cpu_batched = min(items, 1024) / _cuda_seconds(cpu_batches, repeats=3, warmup=1)
        on_card = images.to(DEVICE)
        rates = []
        variants = (
            (torch.float32, torch.float32),
            (torch.bfloat16, torch.float32),
            (torch.bfloat16, torch.bfloat16),
        )
        for dtype, resample in variants:
            make = BatchViews(
                [spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, dtype=dtype, resample_dtype=resample
            )

            def run(make: BatchViews = make, on_card: Tensor = on_card) -> None:
                for s in range(0, items, batch):
                    make(on_card[s : s + batch], s)

            rates.append(items / _cuda_seconds(run, repeats=5, warmup=2))
        rows.append(
            [
                size,
                f"{cpu_rate:.0f}",
                f"{rates[0]:,.0f} ({rates[0] / cpu_rate:.0f}x)",
                f"{rates[1]:,.0f} ({rates[1] / cpu_rate:.0f}x)",
                f"{rates[2]:,.0f} ({rates[2] / cpu_rate:.0f}x)",
                f"{cpu_batched:,.0f} ({cpu_batched / cpu_rate:.0f}x)",
            ]
        )
    header = [
        "image px",
        "per-sample torchvision v2, 1 CPU thread",
        f"BatchViews on the card, float32 out (batch {batch})",
        "BatchViews, bf16 out",
        "bf16 out, bf16 crop/blur products",
        f"BatchViews on this machine's CPU, {threads} threads (batch 256)",
    ]
    return markdown_table(header, rows)


def _steps(model: SimCLR, moco: MoCo, x: Tensor, labels: Tensor) -> dict[str, Callable[[], None]]:
    """Backbone+head step, SimCLR step and MoCo step on the same 2N images (SGD, no Trainer)."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    moco_opt = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    views = list(x.chunk(2))

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        model.project(model.encode(x)).float().pow(2).mean().backward()
        opt.step()

    def simclr() -> None:
        opt.zero_grad(set_to_none=True)
        z1, z2 = model.project(model.encode(x)).chunk(2)
        nt_xent_loss(z1, z2, 0.5).backward()
        opt.step()

    def moco_step() -> None:
        moco_opt.zero_grad(set_to_none=True)
        moco.training_step((views, labels), 0)["loss"].backward()
        moco_opt.step()

    return {"plain": plain, "simclr": simclr, "moco": moco_step}


def step_throughput(configs: tuple[tuple[str, int, int, bool], ...] | None = None) -> str:
    """Part 3: SimCLR step images/s by precision and memory format; views' share; method overhead."""
    configs = configs or (("resnet18", 32, 512, True), ("resnet50", 224, 256, False))
    rows = []
    for name, size, batch, small in configs:
        torch.manual_seed(0)
        model = SimCLR(backbone=name, small_input=small, in_channels=3).to(DEVICE)
        moco = MoCo(backbone=name, small_input=small, in_channels=3, queue_size=65536).to(DEVICE)
        moco.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # no Trainer attached
        labels = torch.zeros(batch, dtype=torch.long, device=DEVICE)
        spec = SimCLRViews(jitter_strength=1.0).specs(size, 3)[0]
        make = BatchViews([spec, spec], 3, IMAGENET_MEAN, IMAGENET_STD, dtype=torch.bfloat16)
        images = photo_crops(batch, size).to(DEVICE)

        def make_views(make: BatchViews = make, images: Tensor = images) -> list[Tensor]:
            return make(images, 0)

        views_s = _cuda_seconds(make_views)
        for mode in ("float32", "bf16 autocast", "bf16 autocast + channels_last"):
            fmt = torch.channels_last if "channels_last" in mode else torch.contiguous_format
            model.to(memory_format=fmt)
            moco.to(memory_format=fmt)
            x = torch.randn(2 * batch, 3, size, size, device=DEVICE).contiguous(memory_format=fmt)
            steps = _steps(model, moco, x, labels)
            enabled = "bf16" in mode
            timed: dict[str, float] = {}
            for key, fn in steps.items():
                if key != "simclr" and mode != "bf16 autocast + channels_last":
                    continue

                def under_autocast(fn: Callable[[], None] = fn, enabled: bool = enabled) -> None:
                    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=enabled):
                        fn()

                timed[key] = _cuda_seconds(under_autocast)
            simclr_s = timed["simclr"]
            plain = timed.get("plain")
            overhead = f"{simclr_s / plain:.3f} / {timed['moco'] / plain:.3f}" if plain else ""
            rows.append(
                [
                    f"{name}, {size} px, batch {batch}",
                    mode,
                    f"{simclr_s * 1000:.1f}",
                    f"{batch / simclr_s:,.0f}",
                    f"{views_s / simclr_s:.0%}",
                    overhead,
                ]
            )
    header = [
        "model",
        "precision / memory format",
        "SimCLR step ms",
        "images/s (2 views each)",
        "bf16 BatchViews time / step",
        "SimCLR / MoCo step ÷ backbone+head step",
    ]
    return markdown_table(header, rows)


def lightning_fit(epochs: int = 2, steps: int = 100, batch: int = 512, workers: int = 8) -> str:
    """Part 4: Trainer(precision="bf16-mixed") SimCLR on Fashion-MNIST, per-sample vs on-device views."""
    root = os.environ.get("FMNIST_ROOT")
    if not root or not os.path.isdir(root):
        return "skipped: set FMNIST_ROOT to a folder with the Fashion-MNIST *-ubyte.gz files"
    import lightning as L

    from benchmarks.device_views import EpochTimer
    from lightning_tl.callbacks import ChannelsLast, KNNMonitor
    from lightning_tl.datamodules import FashionMNISTDataModule

    rows = []
    paths: list[tuple[str, bool, bool]] = [  # (label, views on the device, ChannelsLast callback)
        (f"per-sample torchvision v2, {workers} DataLoader workers", False, False),
        ("batched on-device views (`views: {on_device: true}`)", True, False),
        ("on-device views + `ChannelsLast()` callback", True, True),
    ]
    for label, on_device, channels_last in paths:
        extra: list[L.Callback] = [ChannelsLast()] if channels_last else []
        L.seed_everything(0)
        timer = EpochTimer()
        knn = KNNMonitor(k=20, every_n_epochs=epochs, max_bank_size=10_000, evaluate_at_start=False)
        trainer = L.Trainer(
            accelerator=DEVICE,
            devices=1,
            precision="bf16-mixed",
            max_epochs=epochs,
            limit_train_batches=steps,
            limit_val_batches=1,
            check_val_every_n_epoch=epochs,
            num_sanity_val_steps=0,
            callbacks=[timer, knn, *extra],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        model = SimCLR(backbone="resnet18", in_channels=1, temperature=0.2, warmup_epochs=0.5)
        data = FashionMNISTDataModule(
            root=root,
            batch_size=batch,
            views=SimCLRViews(crop_scale=(0.2, 1.0), on_device=on_device),
            num_workers=workers,
        )
        trainer.fit(model, datamodule=data)
        seconds = statistics.median(timer.seconds[1:] or timer.seconds)  # epoch 1 warms up workers/kernels
        rows.append([label, f"{seconds:.2f}", f"{steps * batch / seconds:,.0f}", f"{knn.history[-1][1]:.3f}"])
    title = (
        f"SimCLR, ResNet-18 (small-input stem), Fashion-MNIST 28 px, batch {batch}, {steps} steps x {epochs} "
        f"epochs, bf16-mixed; s/epoch is the last epoch's; kNN (k=20) on the validation split\n\n"
    )
    header = ["where the views are made", "s / epoch", "images / s", "kNN accuracy (val)"]
    return title + markdown_table(header, rows)


def run() -> str:
    if not torch.cuda.is_available():
        return "skipped: no CUDA device (this table runs on a GPU machine)"
    card = torch.cuda.get_device_name()
    kernel = "built" if cpu_kernel.available() else f"unavailable ({cpu_kernel.unavailable_reason()})"
    parts = [
        f"Card: {card}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}; "
        f"compiled CPU view kernel {kernel}",
        "#### 1. BatchViews on CUDA vs CPU (same seeds)\n\n" + check_cuda_matches_cpu(),
        "#### 2. Two-view throughput, images/s\n\n" + views_throughput(),
        "#### 3. Training steps on the card\n\n" + step_throughput(),
        "#### 4. Lightning fit, bf16-mixed\n\n" + lightning_fit(),
    ]
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(run(), flush=True)
