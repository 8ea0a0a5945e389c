"""SimSiam module: the symmetric stop-gradient loss, no teacher, a short fit, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _ssl_fit import TINY, Recorder, checked_step, data, trainer, views

from lightning_tl.modules import SimSiam


def _model(**kwargs: Any) -> SimSiam:
    heads = {"hidden_dim": 32, "output_dim": 32, "predictor_hidden_dim": 8}
    return SimSiam(**{**TINY, **heads, "lr": 0.05, **kwargs})


def test_training_step_contract_and_stop_gradient() -> None:
    torch.manual_seed(0)
    model = _model()
    out, both = checked_step(model)
    # D(p1, z2) / 2 + D(p2, z1) / 2 with D the negative cosine similarity (Eq. 1-2)
    with torch.no_grad():
        z = model.project(model.encode(both))
        p = model.predict(z)
    z1, z2 = z.split(8)
    p1, p2 = p.split(8)
    expected = -(F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean()) / 2
    torch.testing.assert_close(out["loss"].detach(), expected)
    # the stop-gradient: nothing flows back through the projections used as targets
    z_leaf = [t.clone().requires_grad_(True) for t in (z1, z2)]
    p_leaf = [t.clone().requires_grad_(True) for t in (p1, p2)]
    model.compute_loss(p_leaf, z_leaf).backward()
    assert all(t.grad is None for t in z_leaf) and all(t.grad is not None for t in p_leaf)
    # no teacher: the encoder and predictor are all the state
    assert {name.split(".")[0] for name in model.state_dict()} == {
        "backbone",
        "projection_head",
        "prediction_head",
    }


def test_short_fit_and_linear_lr_scaling(tmp_path: Path) -> None:
    recorder = Recorder()
    model = _model(lr=None)
    trainer(tmp_path, [recorder], max_epochs=1, limit_train_batches=2).fit(model, data())
    assert len(recorder.losses) == 2 and all(-1 <= x <= 1 for x in recorder.losses)
    assert model.base_lr() == pytest.approx(0.05 * 16 / 256)
    assert isinstance(model.trainer.optimizers[0], torch.optim.SGD)


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set lr for optimizer='adamw'"):
        _model(lr=None, optimizer="adamw")
    with pytest.raises(ValueError, match="lr must be > 0"):
        _model(lr=0.0)
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0, got -1"):
        _model(warmup_epochs=-1)
    with pytest.raises(ValueError, match=r"makes 0 views per image .*; set data views"):
        trainer(tmp_path, []).fit(_model(), data(views=None))
    with pytest.raises(ValueError, match=r"batch_size=1.*batch_size >= 2"):
        trainer(tmp_path, []).fit(_model(), data(batch_size=1))
    with pytest.raises(ValueError, match="exactly 2 views"):
        _model().training_step(views(4, (16, 16, 8)), 0)
