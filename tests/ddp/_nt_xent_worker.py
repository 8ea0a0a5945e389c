"""Worker for test_nt_xent_ddp: each rank takes its slice of a global batch and runs gather=True."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from lightning_tl.losses import nt_xent_loss


def main(rank: int, world: int, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(0)
    n, d = 3, 6
    z1 = torch.randn(world * n, d, dtype=torch.float64, generator=gen)
    z2 = torch.randn(world * n, d, dtype=torch.float64, generator=gen)
    a = z1[rank * n : (rank + 1) * n].clone().requires_grad_()
    b = z2[rank * n : (rank + 1) * n].clone().requires_grad_()
    loss = nt_xent_loss(a, b, temperature=0.2, gather=True)
    loss.backward()
    # What DDP does with parameter gradients: average them over ranks.
    torch.save(
        {"loss": loss.detach(), "grad_a": a.grad / world, "grad_b": b.grad / world}, f"{out}/rank{rank}.pt"
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
