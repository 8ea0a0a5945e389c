"""VICReg module: the three terms on the two views' embeddings, learning, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _ssl_fit import TINY, assert_learns, checked_step, data, trainer, views

from lightning_tl.modules import VICReg


def _model(**kwargs: Any) -> VICReg:
    return VICReg(**{**TINY, "hidden_dim": 32, "output_dim": 24, "lr": 0.1, **kwargs})


def _reference(z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float) -> torch.Tensor:
    """The paper's terms (with the authors' scaling: s averaged over features, v averaged over views)."""
    n, d = z1.shape

    def variance(z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - (z.var(0) + 1e-4).sqrt()).mean()

    def covariance(z: torch.Tensor) -> torch.Tensor:
        zc = z - z.mean(0)
        cov = zc.T @ zc / (n - 1)
        return (cov[~torch.eye(d, dtype=torch.bool)] ** 2).sum() / d

    s = ((z1 - z2) ** 2).mean()
    return lam * s + mu * (variance(z1) + variance(z2)) / 2 + nu * (covariance(z1) + covariance(z2))


def test_training_step_contract_and_loss() -> None:
    torch.manual_seed(0)
    model = _model(sim_weight=10.0, var_weight=20.0, cov_weight=3.0)
    out, both = checked_step(model)
    with torch.no_grad():
        z1, z2 = model.project(model.encode(both)).split(8)
    torch.testing.assert_close(out["loss"].detach(), _reference(z1, z2, 10.0, 20.0, 3.0))


def test_learns_on_a_fixed_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # in the Trainer: the paper's LARS with lr from the batch size
    assert_learns(_model(), tmp_path, trained=_model(lr=None))


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    for name in ("sim_weight", "var_weight", "cov_weight"):
        with pytest.raises(ValueError, match=rf"{name} must be >= 0, got -1"):
            _model(**{name: -1})
    with pytest.raises(TypeError, match="predictor_hidden_dim"):  # VICReg has no predictor
        _model(predictor_hidden_dim=64)
    with pytest.raises(ValueError, match=r"makes 0 views per image .*; set data views"):
        trainer(tmp_path, []).fit(_model(), data(views=None))
    with pytest.raises(ValueError, match="same images in one shape"):
        _model().training_step(views(4, (16, 8)), 0)
