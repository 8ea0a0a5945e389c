"""The SSL losses on 2 gloo processes equal one process on the global batch, values and gradients.

Gradients are compared after DDP's averaging (each rank's input gradient divided by the world
size, then the ranks' rows concatenated). Barlow Twins and VICReg with ``gather=True`` return the
global loss on every rank; the negative cosine and DINO losses look at each image alone, so each
rank returns the loss of its rows and their mean is the global loss. The DINO centre is the
moving average of the global batch's teacher mean on every rank.

lightly 1.6 for comparison: its VICReg (``gather_distributed=True``) agrees in gradient and in
the ranks' mean value (its invariance term is per rank); its Barlow Twins standardises each rank's
rows with that rank's mean and std and averages the per-rank cross-correlations, a different loss
from the global batch's (checked below to differ).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _ssl_loss_worker import LAMBDA, UNEVEN, K, make_batches

from lightning_tl.losses import (
    DINOLoss,
    barlow_twins_loss,
    dino_loss,
    negative_cosine_loss,
    update_dino_center,
    vicreg_loss,
)

WORLD = 2


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _single(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor
) -> dict[str, torch.Tensor]:
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = fn(a, b)
    loss.backward()
    assert a.grad is not None
    grad_b = b.grad if b.grad is not None else torch.zeros_like(b)  # None: the stop-gradient
    return {"loss": loss.detach(), "grad_a": a.grad, "grad_b": grad_b}


def _assert_grads_equal(ranks: list[dict[str, torch.Tensor]], single: dict[str, torch.Tensor]) -> None:
    for name in ("grad_a", "grad_b"):
        _close(torch.cat([r[name] for r in ranks]), single[name])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    # One 2-process run serves every test of this file (conftest's run_script, module-scoped).
    out = tmp_path_factory.mktemp("ssl_ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    script = Path(__file__).with_name("_ssl_loss_worker.py")
    proc = subprocess.run(
        [sys.executable, str(script), _free_port(), str(out)],
        env=env,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    return make_batches(WORLD)


@pytest.mark.ddp
def test_barlow_twins_gathered_equals_global_batch(
    ranks: list[dict[str, Any]], batch: dict[str, torch.Tensor]
) -> None:
    single = _single(lambda x, y: barlow_twins_loss(x, y, LAMBDA), batch["z1"], batch["z2"])
    ours = [r["barlow_twins"] for r in ranks]
    for r in ours:  # every rank returns the global loss ...
        _close(r["loss"], single["loss"])
    _assert_grads_equal(ours, single)  # ... and DDP's averaged gradient is the global one: no 1/W slip
    # One row per rank is enough: the statistics are over the global batch of 2.
    tiny = _single(lambda x, y: barlow_twins_loss(x, y, LAMBDA), batch["tiny1"], batch["tiny2"])
    for r in ranks:
        _close(r["barlow_twins_one_row"]["loss"], tiny["loss"])
    _assert_grads_equal([r["barlow_twins_one_row"] for r in ranks], tiny)
    # lightly normalises per rank and averages the per-rank C: not the global batch's loss.
    lightly_mean = sum(r["lightly_barlow_twins"]["loss"] for r in ranks) / WORLD
    assert not torch.allclose(lightly_mean, single["loss"], rtol=1e-3)


@pytest.mark.ddp
def test_vicreg_gathered_equals_global_batch_and_lightly(
    ranks: list[dict[str, Any]], batch: dict[str, torch.Tensor]
) -> None:
    single = _single(vicreg_loss, batch["z1"], batch["z2"])
    ours = [r["vicreg"] for r in ranks]
    for r in ours:
        _close(r["loss"], single["loss"])
    _assert_grads_equal(ours, single)
    # lightly: per-rank invariance, so per-rank values differ, but their mean and the gradients agree.
    theirs = [r["lightly_vicreg"] for r in ranks]
    _close(sum(r["loss"] for r in theirs) / WORLD, single["loss"])
    _assert_grads_equal(theirs, single)
    assert not torch.allclose(theirs[0]["loss"], theirs[1]["loss"])


@pytest.mark.ddp
def test_negative_cosine_per_rank_mean_equals_global_batch(
    ranks: list[dict[str, Any]], batch: dict[str, torch.Tensor]
) -> None:
    single = _single(negative_cosine_loss, batch["z1"], batch["z2"])
    ours = [r["negative_cosine"] for r in ranks]
    _close(sum(r["loss"] for r in ours) / WORLD, single["loss"])
    _assert_grads_equal(ours, single)  # grad_b is zero everywhere: the stop-gradient holds on every rank
    assert all(torch.count_nonzero(r["grad_b"]) == 0 for r in ours)


@pytest.mark.ddp
def test_dino_loss_and_centre_equal_global_batch(
    ranks: list[dict[str, Any]], batch: dict[str, torch.Tensor]
) -> None:
    loss_fn = DINOLoss(K, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=2).double()
    for step in range(2):
        teacher = list(batch["teacher"][step])
        student = [s.clone().requires_grad_() for s in batch["student"][step]]
        center = loss_fn.center.clone()
        loss = loss_fn(teacher, student, epoch=step)
        loss.backward()
        torch.testing.assert_close(
            loss, dino_loss(teacher, student, center, loss_fn.teacher_temperature(step))
        )
        per_rank = [r["dino"][step] for r in ranks]
        _close(sum(r["loss"] for r in per_rank) / WORLD, loss.detach())
        for r in per_rank:
            _close(r["plain"], r["loss"])
            # The centre moved by the global batch's mean: identical on both ranks and here.
            _close(r["center"], loss_fn.center)
        grads = torch.stack([s.grad for s in student if s.grad is not None])  # (V, WN, K)
        _close(torch.cat([r["grads"] for r in per_rank], dim=1), grads)
    assert not torch.equal(loss_fn.center, torch.zeros(1, K))


@pytest.mark.ddp
def test_dino_centre_weights_uneven_batches_by_rows(
    ranks: list[dict[str, Any]], batch: dict[str, torch.Tensor]
) -> None:
    expected = update_dino_center(torch.zeros(K, dtype=torch.float64), list(batch["uneven"]), momentum=0.5)
    _close(expected, 0.5 * batch["uneven"].flatten(0, 1).mean(0))
    assert UNEVEN[0] != UNEVEN[1]
    for r in ranks:
        _close(r["uneven_center"], expected)
