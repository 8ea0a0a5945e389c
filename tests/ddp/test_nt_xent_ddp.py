"""NT-Xent with gather=True on 2 gloo processes equals the single-process loss on the global batch."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from conftest import RunScript

from lightning_tl.losses import nt_xent_loss


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.ddp
def test_gathered_loss_and_gradients_equal_global_batch(tmp_path: Path, run_script: RunScript) -> None:
    run_script(Path(__file__).with_name("_nt_xent_worker.py"), _free_port(), tmp_path, timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    gen = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 6, dtype=torch.float64, generator=gen).requires_grad_()
    z2 = torch.randn(6, 6, dtype=torch.float64, generator=gen).requires_grad_()
    loss = nt_xent_loss(z1, z2, temperature=0.2)
    loss.backward()

    mean_loss = sum(r["loss"] for r in ranks) / 2  # what sync_dist logging reports
    torch.testing.assert_close(mean_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([r["grad_a"] for r in ranks]), z1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([r["grad_b"] for r in ranks]), z2.grad, rtol=1e-10, atol=1e-12)
    # Each rank's share differs from the global value: negatives really came from the other rank.
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"])
