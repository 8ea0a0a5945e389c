"""Barlow Twins module: the loss on the two views' embeddings, learning, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _ssl_fit import TINY, assert_learns, checked_step, data, trainer, views

from lightning_tl.modules import BarlowTwins


def _model(**kwargs: Any) -> BarlowTwins:
    return BarlowTwins(**{**TINY, "hidden_dim": 32, "output_dim": 24, "lr": 0.1, **kwargs})


def _reference(z1: torch.Tensor, z2: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Eq. 1-2 of the paper, written out: the cross-correlation of batch-standardised embeddings."""
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / (z1.var(0, correction=0) + 1e-5).sqrt()
    b = (z2 - z2.mean(0)) / (z2.var(0, correction=0) + 1e-5).sqrt()
    c = torch.stack([torch.stack([(a[:, i] * b[:, j]).sum() / n for j in range(d)]) for i in range(d)])
    off = ~torch.eye(d, dtype=torch.bool)
    return ((1 - c.diagonal()) ** 2).sum() + lambda_ * (c[off] ** 2).sum()


def test_training_step_contract_and_loss() -> None:
    torch.manual_seed(0)
    model = _model(lambda_=0.01)
    out, both = checked_step(model)
    with torch.no_grad():
        z1, z2 = model.project(model.encode(both)).split(8)
    torch.testing.assert_close(out["loss"].detach(), _reference(z1, z2, 0.01), rtol=1e-4, atol=1e-4)


def test_learns_on_a_fixed_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # in the Trainer: the paper's LARS with lr from the batch size
    assert_learns(_model(optimizer="adamw", lr=3e-3, weight_decay=0.0), tmp_path, trained=_model(lr=None))


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lambda_ must be >= 0, got -0.1"):
        _model(lambda_=-0.1)
    with pytest.raises(TypeError, match="predictor_hidden_dim"):  # Barlow Twins has no predictor
        _model(predictor_hidden_dim=64)
    with pytest.raises(ValueError, match="set lr for optimizer='sgd'"):
        _model(lr=None, optimizer="sgd")
    with pytest.raises(ValueError, match=r"makes 0 views per image .*; set data views"):
        trainer(tmp_path, []).fit(_model(), data(views=None))
    with pytest.raises(ValueError, match="exactly 2 views"):
        _model().training_step(views(4, (16,)), 0)
