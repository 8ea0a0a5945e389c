"""Worker for test_ssl_losses_ddp: each rank takes its slice of one global batch and runs the SSL losses.

Saved per rank: each loss's value and the input gradients divided by the world size (what DDP's
gradient averaging does to the parameter gradients), for ours and for lightly's gathered losses,
and the DINO centres. The test recomputes everything in one process on the global batch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins
from lightly.loss import VICRegLoss as LightlyVICReg

from lightning_tl.losses import (
    DINOLoss,
    barlow_twins_loss,
    dino_loss,
    negative_cosine_loss,
    update_dino_center,
    vicreg_loss,
)

N, D, K = 3, 5, 7  # rows per rank, embedding dimension, DINO head outputs
UNEVEN = (2, 4)  # rows per rank for the centre update with uneven batches
LAMBDA = 0.05  # Barlow Twins' off-diagonal weight, large enough to matter on D = 5


def make_batches(world: int) -> dict[str, torch.Tensor]:
    """The global batch of every check, in rank order along dim 0 (dim 1 for view stacks)."""
    gen = torch.Generator().manual_seed(0)
    spread = torch.linspace(0.3, 2.0, D, dtype=torch.float64)  # some stds below VICReg's gamma = 1
    z1 = torch.randn(world * N, D, dtype=torch.float64, generator=gen) * spread
    z2 = z1 + 0.4 * torch.randn(world * N, D, dtype=torch.float64, generator=gen)
    return {
        "z1": z1,
        "z2": z2,
        "tiny1": torch.randn(world, D, dtype=torch.float64, generator=gen),  # one row per rank
        "tiny2": torch.randn(world, D, dtype=torch.float64, generator=gen),
        "teacher": torch.randn(2, 2, world * N, K, dtype=torch.float64, generator=gen),  # (step, G, WN, K)
        "student": torch.randn(2, 5, world * N, K, dtype=torch.float64, generator=gen),  # (step, V, WN, K)
        "uneven": torch.randn(2, sum(UNEVEN), K, dtype=torch.float64, generator=gen),  # (G, rows, K)
    }


def _pair_run(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor, world: int
) -> dict[str, torch.Tensor]:
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fn(a, b)
    loss.backward()
    assert a.grad is not None
    grad_b = b.grad / world if b.grad is not None else torch.zeros_like(b)
    return {"loss": loss.detach(), "grad_a": a.grad / world, "grad_b": grad_b}


def main(rank: int, world: int, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    batch = make_batches(world)
    rows = slice(rank * N, (rank + 1) * N)
    a, b = batch["z1"][rows], batch["z2"][rows]
    result: dict[str, object] = {
        "barlow_twins": _pair_run(lambda x, y: barlow_twins_loss(x, y, LAMBDA, gather=True), a, b, world),
        "barlow_twins_one_row": _pair_run(
            lambda x, y: barlow_twins_loss(x, y, LAMBDA, gather=True),
            batch["tiny1"][rank : rank + 1],
            batch["tiny2"][rank : rank + 1],
            world,
        ),
        "lightly_barlow_twins": _pair_run(LightlyBarlowTwins(LAMBDA, gather_distributed=True), a, b, world),
        "vicreg": _pair_run(lambda x, y: vicreg_loss(x, y, gather=True), a, b, world),
        "lightly_vicreg": _pair_run(LightlyVICReg(gather_distributed=True), a, b, world),
        "negative_cosine": _pair_run(negative_cosine_loss, a, b, world),
    }

    # DINO: the per-rank loss (no gather) and the module's centre over two steps.
    loss_fn = DINOLoss(K, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=2).double()
    dino = []
    for step in range(2):
        teacher = list(batch["teacher"][step, :, rows])
        student = [s.clone().requires_grad_() for s in batch["student"][step, :, rows]]
        center = loss_fn.center.clone()
        plain = dino_loss(teacher, student, center, teacher_temp=loss_fn.teacher_temperature(step))
        loss = loss_fn(teacher, student, epoch=step)
        loss.backward()
        dino.append(
            {
                "loss": loss.detach(),
                "plain": plain.detach(),
                "grads": torch.stack([s.grad / world for s in student if s.grad is not None]),
                "center": loss_fn.center.clone(),
            }
        )
    result["dino"] = dino
    start = sum(UNEVEN[:rank])
    uneven = list(batch["uneven"][:, start : start + UNEVEN[rank]])
    result["uneven_center"] = update_dino_center(torch.zeros(K, dtype=torch.float64), uneven, momentum=0.5)
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
