"""Worker for test_clip_loss_ddp: each rank takes its slice of a global batch; ours vs open_clip."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from lightning_tl.losses import clip_loss


def main(rank: int, world: int, port: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(0)
    n, d = 3, 5
    images = F.normalize(torch.randn(world * n, d, dtype=torch.float64, generator=gen), dim=1)
    texts = F.normalize(torch.randn(world * n, d, dtype=torch.float64, generator=gen), dim=1)
    result = {}
    for local in (False, True):
        runs = {}
        for name in ("ours", "open_clip"):
            a = images[rank * n : (rank + 1) * n].clone().requires_grad_()
            b = texts[rank * n : (rank + 1) * n].clone().requires_grad_()
            scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
            if name == "ours":
                loss = clip_loss(a, b, scale, gather=True, local_loss=local)
            else:
                ref = ClipLoss(local_loss=local, gather_with_grad=True, rank=rank, world_size=world)
                loss = ref(a, b, scale)
            loss.backward()
            # What DDP does with parameter gradients: average them over ranks.
            grads = [a.grad / world, b.grad / world]
            scale_grad = scale.grad.clone()
            dist.all_reduce(scale_grad)
            runs[name] = {"loss": loss.detach(), "grads": grads, "scale_grad": scale_grad / world}
        result["local" if local else "global"] = runs
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.multiprocessing.spawn(main, args=(2, sys.argv[1], sys.argv[2]), nprocs=2)
