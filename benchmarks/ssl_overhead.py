"""The SSL family's method overhead: each method's training step against a backbone+head step on its images.

Table (a)'s method (:mod:`benchmarks.simclr_overhead`) for every self-supervised module, each built from
its digits recipe (``recipes/<method>/digits.yaml``: half-width timm ResNet-18, the recipe's heads and
optimizer) on random 16 px images, batch ``batch``. The reference step is forward through backbone and
every trained head (projector, predictor; DINO's head) on the method's views, a trivial loss (mean of
squares), backward and the optimizer step. The method step is ``training_step`` + backward + the same
optimizer step, and for BYOL and DINO the teacher's EMA update that their ``optimizer_step`` hook runs.
BYOL and DINO also run the teacher forward (no gradient) on the two global views in every step: compute
that is part of the method, reported as its own row, as table (d) reports MoCo's key encoder. All steps
are timed in turn (interleaved rounds, medians), so drifts of the machine hit them alike.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from benchmarks._timing import interleaved_medians, markdown_table, median_seconds
from lightning_tl.nn import update_momentum
from lightning_tl.optim import create_optimizer

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # row name: recipe
    "SimCLR": "simclr/digits",
    "BYOL": "byol/digits",
    "SimSiam": "simsiam/digits",
    "Barlow Twins": "barlow_twins/digits",
    "VICReg": "vicreg/digits",
    "DINO": "dino/digits",
}


def _build(recipe: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The recipe's module (its init_args), the model config and the data config."""
    config = yaml.safe_load((ROOT / f"recipes/{recipe}.yaml").read_text())
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    init_args = config["model"]["init_args"]
    return cls(**init_args), init_args, config["data"]["init_args"]


def _views(data: dict[str, Any], batch: int, gen: torch.Generator) -> list[Tensor]:
    """Random images in the recipe's view sizes: two global (B, 3, S, S), then DINO's local views."""
    size = data["image_size"]
    recipe = data["views"]["init_args"]
    local = recipe.get("local_views", 0)
    local_size = recipe.get("local_image_size") or size // 2
    sizes = [size, size] + [local_size] * local
    return [torch.randn(batch, 3, s, s, generator=gen) for s in sizes]


def _heads(module: Any, views: list[Tensor]) -> Tensor:
    """Backbone and every trained head of ``module`` on ``views``, one backbone call a view size."""
    sizes = dict.fromkeys(v.shape for v in views)  # global views first, then the local ones
    h = torch.cat([module.backbone(torch.cat([v for v in views if v.shape == s])) for s in sizes])  # (V*B, F)
    if hasattr(module, "head"):  # DINO
        return module.head(h)
    z = module.projection_head(h)
    return module.prediction_head(z) if hasattr(module, "prediction_head") else z


def _teacher_pairs(module: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(student, teacher) pairs of the EMA update; none for methods without a teacher."""
    teacher_of: dict[str, str] = getattr(module, "teacher_of", {})
    return [(getattr(module, student), getattr(module, teacher)) for teacher, student in teacher_of.items()]


def _ema_update(pairs: list[tuple[nn.Module, nn.Module]], m: float = 0.99) -> None:
    """BYOL's and DINO's teacher update after each step: ``teacher = m teacher + (1 - m) student``."""
    for student, teacher in pairs:
        update_momentum(student, teacher, m)


def _row_steps(
    name: str, batch: int, gen: torch.Generator
) -> tuple[list[Callable[[], object]], dict[str, Any]]:
    module, model, data = _build(METHODS[name])
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    views = _views(data, batch, gen)
    labels = torch.zeros(batch, dtype=torch.long)
    lr = model.get("lr") or 0.1  # the rate does not change the time
    weight_decay = getattr(module, "weight_decay", 0.0)
    optimizer = create_optimizer(module, model["optimizer"], lr, weight_decay)
    pairs = _teacher_pairs(module)

    def reference() -> None:
        optimizer.zero_grad(set_to_none=True)
        _heads(module, views).pow(2).mean().backward()
        optimizer.step()

    def method() -> None:
        optimizer.zero_grad(set_to_none=True)
        module.training_step((views, labels), 0)["loss"].backward()
        optimizer.step()
        if pairs:
            _ema_update(pairs)

    info: dict[str, Any] = {"module": module, "views": views, "pairs": pairs}
    return [reference, method], info


def run(batch: int = 128, repeats: int = 10) -> str:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    steps: list[Callable[[], object]] = []
    infos: dict[str, dict[str, Any]] = {}
    for name in METHODS:
        pair, infos[name] = _row_steps(name, batch, gen)
        steps += pair
    medians = interleaved_medians(steps, repeats)
    rows: list[list[object]] = []
    for i, (name, info) in enumerate(infos.items()):
        reference, method = medians[2 * i], medians[2 * i + 1]
        views, pairs = info["views"], info["pairs"]
        images = " + ".join(f"{n} x {v.shape[-1]} px" for n, v in _grouped(views))
        loss = median_seconds(_loss_step(name, info["module"], views), repeats)
        teacher = ema = 0.0
        if pairs:
            teacher = median_seconds(_teacher_forward(info["module"], views[:2]), repeats)
            ema = median_seconds(partial(_ema_update, pairs), repeats)
        rows.append(
            [
                name,
                images,
                f"{reference * 1000:.0f}",
                f"{method * 1000:.0f}",
                f"{method / reference:.3f}",
                f"{loss * 1000:.1f}",
                f"{teacher * 1000:.0f}" if pairs else "-",
                f"{ema * 1000:.1f}" if pairs else "-",
                f"{(method - teacher - ema) / reference:.3f}",
            ]
        )
    title = (
        f"SSL method overhead: half-width timm ResNet-18 (small-input stem) and each digits recipe's heads "
        f"and optimizer, batch {batch}, random images, {torch.get_num_threads()} threads; medians of "
        f"{repeats} interleaved rounds\n\n"
    )
    header = [
        "method",
        "views a step",
        "backbone+heads step ms",
        "method step ms",
        "method / backbone+heads",
        "loss fwd+bwd alone ms",
        "teacher forward ms",
        "EMA update ms",
        "ratio without teacher forward and EMA",
    ]
    return title + markdown_table(header, rows)


def _loss_step(name: str, module: Any, views: list[Tensor]) -> Callable[[], object]:
    """``compute_loss`` forward + backward alone, on the head outputs of ``views`` (one (B, D) per view)."""
    with torch.no_grad():
        out = _heads(module, views)  # (V*B, D)
    zs = [z.clone().requires_grad_(True) for z in out.chunk(len(views))]  # V x (B, D)
    targets = [z.detach() for z in zs]  # the teacher / stop-gradient branch
    args: tuple[Any, ...] = {
        "SimCLR": (zs,),
        "BYOL": (zs, targets),
        "SimSiam": (zs, targets),
        "Barlow Twins": (zs[0], zs[1]),
        "VICReg": (zs[0], zs[1]),
        "DINO": (targets[:2], zs),  # teacher outputs of the global views, student outputs of all
    }[name]
    return lambda: module.compute_loss(*args).backward()


def _teacher_forward(module: Any, global_views: list[Tensor]) -> Callable[[], object]:
    """The teacher's forward of one step (no gradient), as BYOL's and DINO's ``training_step`` runs it."""
    if hasattr(module, "teacher_forward"):  # DINO: the teacher sees the global views
        return partial(module.teacher_forward, global_views)
    return partial(module.encode_teacher, torch.cat(global_views))  # BYOL: both views at once


def _grouped(views: list[Tensor]) -> list[tuple[int, Tensor]]:
    """(count, example) per run of views of one size: ``[(2, global), (4, local)]``."""
    groups: list[tuple[int, Tensor]] = []
    for v in views:
        if groups and groups[-1][1].shape == v.shape:
            groups[-1] = (groups[-1][0] + 1, groups[-1][1])
        else:
            groups.append((1, v))
    return groups


if __name__ == "__main__":
    print(run())
