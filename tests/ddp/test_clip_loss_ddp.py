"""clip_loss with gather=True on 2 gloo processes: equals open_clip's ClipLoss and the global-batch loss."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import RunScript

from lightning_tl.losses import clip_loss


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.ddp
def test_global_and_local_modes_equal_open_clip_and_global_batch(
    tmp_path: Path, run_script: RunScript
) -> None:
    run_script(Path(__file__).with_name("_clip_loss_worker.py"), _free_port(), tmp_path, timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 5, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    texts = F.normalize(torch.randn(6, 5, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    scale = torch.tensor(20.0, dtype=torch.float64, requires_grad=True)
    loss = clip_loss(images, texts, scale)
    loss.backward()

    for mode in ("global", "local"):
        for r in ranks:  # forward and gradients equal open_clip's on every rank
            ours, theirs = r[mode]["ours"], r[mode]["open_clip"]
            torch.testing.assert_close(ours["loss"], theirs["loss"], rtol=1e-12, atol=1e-12)
            for a, b in zip(ours["grads"], theirs["grads"], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(ours["scale_grad"], theirs["scale_grad"], rtol=1e-10, atol=1e-12)
        # DDP-averaged gradients equal those of the single-process loss on the global batch.
        grads_a = torch.cat([r[mode]["ours"]["grads"][0] for r in ranks])
        grads_b = torch.cat([r[mode]["ours"]["grads"][1] for r in ranks])
        torch.testing.assert_close(grads_a, images.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads_b, texts.grad, rtol=1e-10, atol=1e-12)
        mean_loss = sum(r[mode]["ours"]["loss"] for r in ranks) / 2
        torch.testing.assert_close(mean_loss, loss.detach(), rtol=1e-12, atol=1e-12)
        # the (replicated) logit scale's DDP-averaged gradient is the global one too
        torch.testing.assert_close(ranks[0][mode]["ours"]["scale_grad"], scale.grad, rtol=1e-10, atol=1e-12)
    # global: every rank holds the global loss; local: each rank its own (different) share
    torch.testing.assert_close(ranks[0]["global"]["ours"]["loss"], loss.detach(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ranks[0]["local"]["ours"]["loss"], ranks[1]["local"]["ours"]["loss"])
