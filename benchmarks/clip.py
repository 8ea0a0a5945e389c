"""CLIP tables: zero-shot vs linear probe after the tiny recipe, and the loss/gather share of a step.

``clip_zero_shot`` trains ``recipes/clip/fashion_mnist_tiny.yaml`` through the CLI (stopped after
``max_steps`` of its 214-step epoch when given; by default it runs whole), then scores
the Fashion-MNIST test set (10,000 images) zero-shot (class-name prompts) and with a linear probe
(logistic regression) on the same image tower's pooled features, and on those of the untrained
tower. ``clip_overhead`` times a CLIP step of the tiny recipe's towers against the two towers'
forward+backward alone, in one process and in two gloo processes (global batch 256).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader

from benchmarks._timing import interleaved_medians, markdown_table
from lightning_tl.callbacks import zero_shot_classifier
from lightning_tl.cli import build_cli
from lightning_tl.datamodules.image_text import ImageTextDataset
from lightning_tl.datamodules.splits import stratified_split
from lightning_tl.losses import clip_loss
from lightning_tl.modules import CLIP

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/clip/fashion_mnist_tiny.yaml"
TEMPLATES = ["a photo of a {}.", "a photo of the {}.", "an image of a {}."]


class TinyCLIPSettings(TypedDict):
    """The ``CLIP`` arguments of the tiny recipe's towers."""

    image_backbone: str
    backbone_kwargs: dict[str, Any]
    in_channels: int
    embed_dim: int
    text_width: int
    text_layers: int
    text_heads: int
    context_length: int


TINY: TinyCLIPSettings = {
    "image_backbone": "timm/resnet18",
    "backbone_kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16},
    "in_channels": 1,
    "embed_dim": 128,
    "text_width": 128,
    "text_layers": 3,
    "text_heads": 4,
    "context_length": 16,
}


@torch.no_grad()
def _features(
    model: CLIP, loader: Any, max_batches: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled image-tower features (N, F), normalised embeddings (N, E) and labels (N,)."""
    model.eval()
    feats, embeds, labels = [], [], []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = batch["image"].to(model.device)
        h = model.model.visual.backbone(x)  # (B, F): the tower before its projection
        feats.append(h.cpu())
        embeds.append(F.normalize(model.model.visual.proj(h), dim=-1).cpu())
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(embeds), torch.cat(labels)


def _probe(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
    mean, std = train.mean(0), train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=1000, C=1.0)
    clf.fit(((train - mean) / std).numpy(), y_train.numpy())
    return float(clf.score(((test - mean) / std).numpy(), y_test.numpy()))


def run_zero_shot(
    max_steps: int | None = None,
    probe_train: int = 5_000,
    extra_args: list[str] | None = None,
    max_batches: int | None = None,
) -> str:
    """The table.

    Args:
        max_steps: stop the recipe's one epoch (214 steps) after this many steps (None: the whole
            recipe, the default).
        probe_train: train images (a class-stratified subset of the 55,000) the linear probe fits on.
        extra_args: further recipe overrides; ``max_batches`` caps the scoring (smoke tests only).
    """
    root = tempfile.mkdtemp(prefix="clip_bench_")
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    args = [
        "fit",
        "--config",
        str(RECIPE),
        f"--trainer.default_root_dir={root}",
        f"--trainer.accelerator={accelerator}",
        "--trainer.enable_progress_bar=false",
        *([f"--trainer.max_steps={max_steps}"] if max_steps is not None else []),
        *(extra_args or []),
    ]
    start = time.perf_counter()
    cli = build_cli(args)
    train_s = time.perf_counter() - start
    model, dm = cli.model, cli.datamodule
    steps = cli.trainer.global_step
    train = dm.splits()["train"]
    keep = stratified_split([train.label(i) for i in range(len(train))], [probe_train], seed=0)[1]
    probe_set = ImageTextDataset(train.subset(keep), dm.eval_transform(), dm.tokenizer)
    train_loader = DataLoader(probe_set, batch_size=256)
    test_loader = dm.test_dataloader()
    rows = []
    torch.manual_seed(0)
    untrained = CLIP(**{k: model.hparams[k] for k in TINY}).to(model.device)
    for name, m in (("trained (tiny recipe)", model), ("untrained (random init)", untrained)):
        f_train, _, y_train = _features(m, train_loader, max_batches)
        f_test, e_test, y_test = _features(m, test_loader, max_batches)
        weights = zero_shot_classifier(m, dm.tokenizer, dm.class_names, TEMPLATES).cpu()  # (C, E)
        logits = e_test @ weights.T  # (N, C)
        top1 = float((logits.argmax(1) == y_test).float().mean())
        top5 = float((logits.topk(5, dim=1).indices == y_test[:, None]).any(1).float().mean())
        probe = _probe(f_train, y_train, f_test, y_test)
        rows.append([name, f"{top1:.3f}", f"{top5:.3f}", f"{probe:.3f}"])
    device = (
        torch.cuda.get_device_name() if accelerator == "gpu" else f"CPU, {torch.get_num_threads()} threads"
    )
    title = (
        f"Fashion-MNIST test set (10,000 images) after `{RECIPE.relative_to(ROOT)}` stopped at {steps} "
        f"steps of batch 256 (max_steps={max_steps}; the recipe's epoch has 214), {train_s / 60:.1f} min "
        f"on {device}. Zero-shot prompts: {TEMPLATES}; linear probe: logistic regression on the pooled "
        f"tower features of {probe_train:,} class-stratified train images.\n\n"
    )
    header = ["image tower", "zero-shot top-1", "zero-shot top-5", "linear probe top-1"]
    return title + markdown_table(header, rows)


# ---------------------------------------------------------------------------- step-time overhead
def _step_fns(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, gather: bool, local: bool) -> list:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def towers() -> None:
        opt.zero_grad(set_to_none=True)
        (model.encode_image(images).sum() + model.encode_text(tokens).sum()).backward()
        _sync()

    def clip_step() -> None:
        opt.zero_grad(set_to_none=True)
        a, b = model.encode_image(images), model.encode_text(tokens)
        clip_loss(a, b, model.logit_scale.exp(), gather=gather, local_loss=local).backward()
        _sync()

    return [towers, clip_step]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _inputs(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, 28, 28, generator=g).to(device)
    tokens = torch.randint(1, 49405, (batch, 16), generator=g)
    tokens[:, 0], tokens[:, -1] = 49406, 49407  # start / end tokens
    return images, tokens.to(device)


def _ddp_worker(rank: int, world: int, port: str, out: str, batch: int, repeats: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = CLIP(**TINY)
    images, tokens = _inputs(batch // world, torch.device("cpu"))
    fns = _step_fns(model, images, tokens, True, False)[:1]
    fns += (
        _step_fns(model, images, tokens, True, False)[1:] + _step_fns(model, images, tokens, True, True)[1:]
    )
    times = interleaved_medians(fns, repeats, warmup=1)
    if rank == 0:
        torch.save(times, out)
    dist.destroy_process_group()


def run_overhead(batch: int = 256, repeats: int = 8) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = CLIP(**TINY).to(device)
    images, tokens = _inputs(batch, device)
    towers, step = interleaved_medians(_step_fns(model, images, tokens, False, False), repeats, warmup=2)
    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    rows = [
        [
            f"1 process ({where})",
            batch,
            f"{towers * 1e3:.1f}",
            f"{step * 1e3:.1f}",
            f"{step / towers:.3f}",
            "-",
            "-",
        ]
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.pt")
        torch.multiprocessing.spawn(_ddp_worker, args=(2, port, out, batch, repeats), nprocs=2)
        t, g, loc = torch.load(out)
    rows.append(
        [
            "2 gloo processes (CPU, 1 thread each)",
            f"2 x {batch // 2}",
            f"{t * 1e3:.1f}",
            f"{g * 1e3:.1f}",
            f"{g / t:.3f}",
            f"{loc * 1e3:.1f}",
            f"{loc / t:.3f}",
        ]
    )
    header = [
        "setting",
        "batch",
        "towers fwd+bwd ms",
        "CLIP step ms (global loss)",
        "x towers",
        "CLIP step ms (local loss)",
        "x towers",
    ]
    title = (
        "Tiny-recipe towers (quarter-width ResNet-18, 3-layer 128-wide text transformer, 16 tokens), 28 px; "
        '"towers" = both encoders forward + backward of a plain sum; the CLIP step adds normalisation, '
        "the all-gathers (with gradient) and the contrastive loss. "
        f"Medians of {repeats} interleaved repeats.\n\n"
    )
    return title + markdown_table(header, rows)


if __name__ == "__main__":
    print(run_zero_shot(extra_args=sys.argv[1:]) if sys.argv[1:2] != ["overhead"] else run_overhead())
