"""BYOL module: the training step, the EMA teacher and its cosine schedule, exact resume, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _ssl_fit import TINY, Recorder, assert_same_run, checked_step, data, fit_and_resume, trainer, views
from torch import nn

from lightning_tl.augment import SimCLRViews
from lightning_tl.modules import BYOL
from lightning_tl.nn import cosine_momentum


def _model(**kwargs: Any) -> BYOL:
    heads = {"hidden_dim": 32, "output_dim": 16, "predictor_hidden_dim": 32}
    return BYOL(**{**TINY, **heads, "lr": 0.1, "warmup_epochs": 0, **kwargs})


def test_training_step_contract_and_symmetric_loss() -> None:
    torch.manual_seed(0)
    model = _model()
    out, both = checked_step(model)
    # L + L~ of the paper: 2 - 2 cos between each view's online prediction and the other view's target
    with torch.no_grad():
        p = model.predict(model.project(model.encode(both))).split(8)
        t = model.teacher_head(model.teacher_backbone(both)).split(8)
    expected = sum((2 - 2 * F.cosine_similarity(p[i], t[1 - i])).mean() for i in (0, 1))
    torch.testing.assert_close(out["loss"].detach(), expected)
    # the teacher gets no gradient; backbone, projector and predictor do
    out["loss"].backward()
    for net in (model.teacher_backbone, model.teacher_head):
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    online = [model.backbone, model.projection_head, model.prediction_head]
    assert all(p.grad is not None for net in online for p in net.parameters())


def test_teacher_follows_cosine_ema_after_every_optimizer_step(tmp_path: Path) -> None:
    model = _model(teacher_momentum=0.9)

    class Check(L.Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
            self.teacher = {k: v.clone() for k, v in model.teacher_backbone.state_dict().items()}

        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
            k = trainer.global_step - 1  # the optimizer step just taken
            m = cosine_momentum(k, 4, 0.9, 1.0)
            assert trainer.callback_metrics["teacher_momentum"].item() == pytest.approx(m)
            for name, value in model.teacher_backbone.state_dict().items():
                if value.is_floating_point():  # weights and BN running statistics
                    want = m * self.teacher[name] + (1 - m) * model.backbone.state_dict()[name]
                    torch.testing.assert_close(value, want, msg=name)
            self.rates.append(m)

    check = Check()
    trainer(tmp_path, [check], max_epochs=2, limit_train_batches=2).fit(model, data())
    assert check.rates == pytest.approx(
        [0.9, 0.9 + 0.1 * 0.5 * (1 - 2**-0.5), 0.95, 0.9 + 0.1 * 0.5 * (1 + 2**-0.5)]
    )
    # the teacher's own forward leaves its batch-norm statistics alone (momentum 0): they come from the EMA
    assert all(m.momentum == 0.0 for m in model.teacher_backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_ema_once_per_optimizer_step_with_gradient_accumulation(tmp_path: Path) -> None:
    recorder = Recorder(keep=("teacher_backbone.",))
    model = _model(teacher_momentum=0.5, final_teacher_momentum=0.5)
    conv = "teacher_backbone.model.conv1.weight"
    initial = model.state_dict()[conv].clone()
    trainer(tmp_path, [recorder], max_epochs=1, limit_train_batches=4, accumulate_grad_batches=2).fit(
        model, data()
    )
    assert model.global_step == 2
    states = [initial] + [s[conv] for s in recorder.states]
    # batches 0 and 2 only accumulate gradients: no optimizer step, so no EMA update after them
    assert torch.equal(states[0], states[1]) and not torch.equal(states[1], states[2])
    assert torch.equal(states[2], states[3]) and not torch.equal(states[3], states[4])


def test_resume_continues_teacher_and_momentum_exactly(tmp_path: Path) -> None:
    keep = ("teacher_backbone.", "teacher_head.")
    full, resumed = fit_and_resume(
        tmp_path, lambda: _model(teacher_momentum=0.9), 4, keep, metrics=("teacher_momentum",)
    )
    assert len(full.losses) == 6 and all(torch.isfinite(torch.tensor(full.losses)))
    assert len({x["teacher_momentum"] for x in full.logged}) == 6  # the schedule moves at every step
    assert_same_run(full, resumed, 4)


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"teacher_momentum must be in \[0, 1\], got 1.5"):
        _model(teacher_momentum=1.5)
    with pytest.raises(ValueError, match=r"teacher_momentum must be in \[0, 1\], got -0.1"):
        _model(teacher_momentum=-0.1)
    with pytest.raises(ValueError, match=r"final_teacher_momentum must be in \[0, 1\], got 2"):
        _model(final_teacher_momentum=2)
    with pytest.raises(ValueError, match="set lr for optimizer='adamw'"):
        _model(lr=None, optimizer="adamw")
    with pytest.raises(ValueError, match=r"makes 0 views per image .*; set data views: .*BYOLViews"):
        trainer(tmp_path, []).fit(_model(), data(views=None))
    with pytest.raises(ValueError, match=r"makes 2 global and 2 local views; set data views: .*BYOLViews"):
        trainer(tmp_path, []).fit(_model(), data(views=SimCLRViews(local_views=2)))
    with pytest.raises(ValueError, match="exactly 2 views"):
        _model().training_step(views(4, (16, 16, 16)), 0)
    with pytest.raises(ValueError, match="same images in one shape"):
        _model().training_step(views(4, (16, 8)), 0)
