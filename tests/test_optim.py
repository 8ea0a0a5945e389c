"""Parameter groups, timm optimizers and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_tl.optim import create_optimizer, param_groups, warmup_cosine, warmup_cosine_scheduler


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_no_weight_decay_on_1d_params() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_frozen_params_left_out() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    model[0].requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw", "lamb"])
def test_create_optimizer_steps(name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = create_optimizer(model, name, lr=0.1, weight_decay=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]


def test_unknown_optimizer_and_bad_lr() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"Unknown optimizer 'larz'.*lars"):
        create_optimizer(model, "larz", lr=0.1)
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        create_optimizer(model, "sgd", lr=0)


def test_warmup_cosine_values() -> None:
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(60, 0, 100, min_ratio=0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.6))
    )


def test_scheduler_follows_function_and_restores() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    sched = warmup_cosine_scheduler(opt, 3, 10)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0 * warmup_cosine(s, 3, 10) for s in range(6)])
    opt2 = torch.optim.SGD(model.parameters(), lr=2.0)
    sched2 = warmup_cosine_scheduler(opt2, 3, 10)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
