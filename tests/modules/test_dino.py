"""DINO module: multi-crop step, centre, teacher temperature warm-up, frozen last layer, resume, errors."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _ssl_fit import TINY, assert_same_run, data, fit_and_resume, trainer, views

from lightning_tl.augment import DINOViews, SimCLRViews
from lightning_tl.modules import DINO


def _model(**kwargs: Any) -> DINO:
    head = {"hidden_dim": 32, "bottleneck_dim": 8, "output_dim": 64}
    return DINO(**{**TINY, **head, "lr": 1e-3, "warmup_epochs": 0, **kwargs})


def _dino_data(**kwargs: Any) -> Any:
    return data(views=DINOViews(local_views=2, local_image_size=8), **kwargs)


def _reference_loss(
    teacher: list[torch.Tensor], student: list[torch.Tensor], center: torch.Tensor, tt: float, ts: float
) -> torch.Tensor:
    """Algorithm 1 of the paper, over every (teacher global view i, student view j != i) pair."""
    terms = []
    for i, t in enumerate(teacher):
        target = F.softmax((t - center) / tt, dim=1)
        for j, s in enumerate(student):
            if i != j:
                terms.append(-(target * F.log_softmax(s / ts, dim=1)).sum(dim=1).mean())
    return torch.stack(terms).mean()


def test_multicrop_step_loss_centre_and_gradients() -> None:
    torch.manual_seed(0)
    model = _model(center_momentum=0.8)
    model.criterion.center.normal_()  # a non-zero centre, so centring matters
    center = model.criterion.center.clone()
    batch, labels = views(8, (16, 16, 8, 8))
    out = model.training_step((batch, labels), 0)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["features"].shape == (8, model.backbone.num_features) and not out["features"].requires_grad
    assert torch.equal(out["labels"], labels)
    with torch.no_grad():  # the student encodes global views together, then local ones; the teacher globals
        h = torch.cat([model.encode(torch.cat(batch[:2])), model.encode(torch.cat(batch[2:]))])
        student = list(model.head(h).split(8))
        teacher = list(model.teacher_head(model.teacher_backbone(torch.cat(batch[:2]))).split(8))
    # epoch 0 of the warm-up: tau_t = warmup_teacher_temp = 0.04, tau_s = 0.1
    torch.testing.assert_close(out["loss"].detach(), _reference_loss(teacher, student, center, 0.04, 0.1))
    # the centre moved towards the mean teacher output of both global views (Eq. 4)
    torch.testing.assert_close(model.criterion.center, 0.8 * center + 0.2 * torch.cat(teacher).mean(0))
    # the teacher gets no gradient; the student does, but the last layer's is dropped in the first epoch
    out["loss"].backward()
    for net in (model.teacher_backbone, model.teacher_head):
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert all(p.grad is not None for p in [*model.backbone.parameters(), *model.head.parameters()])
    model.on_after_backward()  # current_epoch 0 < freeze_last_layer 1
    assert model.head.last_layer.weight.grad is None
    assert all(p.grad is not None for p in model.head.mlp.parameters())


def test_resume_continues_centre_temperature_teacher_and_freezing(tmp_path: Path) -> None:
    created: list[torch.Tensor] = []

    def make() -> DINO:
        model = _model(teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=3)
        created.append(model.head.last_layer.weight.detach().clone())
        return model

    keep = ("criterion.center", "teacher_backbone.", "teacher_head.", "head.last_layer.")
    full, resumed = fit_and_resume(
        tmp_path, make, 3, keep, ("teacher_temp", "teacher_momentum"), max_epochs=3, limit_train_batches=2,
        data_kwargs={"views": DINOViews(local_views=2, local_image_size=8)},
    )  # fmt: skip
    # tau_t warms up per epoch 0.04 -> 0.055 -> 0.07; the EMA rate rises every step; the centre moves
    temps = [x["teacher_temp"] for x in full.logged]
    assert temps == pytest.approx([0.04, 0.04, 0.055, 0.055, 0.07, 0.07])
    rates = [x["teacher_momentum"] for x in full.logged]
    assert rates[0] == pytest.approx(0.996) and all(a < b for a, b in itertools.pairwise(rates))
    centres = [s["criterion.center"] for s in full.states]
    assert all(not torch.equal(a, b) for a, b in itertools.pairwise(centres))
    # the last layer stays at its initial weights through epoch 0 and trains from epoch 1 on
    last = [s["head.last_layer.weight"] for s in full.states]
    assert torch.equal(last[0], created[0]) and torch.equal(last[1], created[0])
    assert not torch.equal(last[2], created[0])
    # stopped in the middle of epoch 1 and resumed: everything continues exactly
    assert_same_run(full, resumed, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"teacher_temp": 0.0}, r"teacher_temp must be > 0, got 0.0"),
        ({"teacher_temp": -0.04}, r"teacher_temp must be > 0, got -0.04"),
        ({"warmup_teacher_temp": 0}, r"warmup_teacher_temp must be > 0, got 0"),
        ({"student_temp": -1.0}, r"student_temp must be > 0, got -1.0"),
        ({"center_momentum": 1.5}, r"center_momentum must be in \[0, 1\], got 1.5"),
        ({"teacher_momentum": 1.1}, r"teacher_momentum must be in \[0, 1\], got 1.1"),
        ({"final_teacher_momentum": -0.5}, r"final_teacher_momentum must be in \[0, 1\], got -0.5"),
        ({"num_global_views": 1}, r"num_global_views must be >= 2, got 1"),
        ({"freeze_last_layer": -1}, r"freeze_last_layer must be >= 0 epochs, got -1"),
        ({"warmup_teacher_temp_epochs": -2}, r"warmup_teacher_temp_epochs must be >= 0, got -2"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _model(**kwargs)


def test_bad_batches_and_data_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="predictor_hidden_dim"):  # DINO has no predictor
        _model(predictor_hidden_dim=64)
    model = _model()
    with pytest.raises(
        ValueError, match=r"needs at least 2 global views.*\[\(16, 16\), \(8, 8\), \(8, 8\)\], 1 of"
    ):
        model.training_step(views(4, (16, 8, 8)), 0)
    with pytest.raises(ValueError, match=r"num_global_views=2 global views first.*3 of the first size"):
        model.training_step(views(4, (16, 16, 16, 8)), 0)
    with pytest.raises(ValueError, match=r"global views first"):  # a global view after a local one
        model.training_step(views(4, (16, 8, 16)), 0)
    with pytest.raises(ValueError, match=r"makes 3 global and 0 local views; set data views: .*DINOViews"):
        trainer(tmp_path, []).fit(_model(), data(views=SimCLRViews(num_views=3)))
    with pytest.raises(ValueError, match=r"trains on 3 global views"):
        trainer(tmp_path, []).fit(_model(num_global_views=3), _dino_data())
