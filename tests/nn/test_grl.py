"""grad_reverse, dann_coeff and GradientReversal (the DANN module's use of them: tests/test_dann.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_tl.heads import DomainClassifier
from lightning_tl.nn import GradientReversal, dann_coeff, grad_reverse


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0, 2.5])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_forward_is_identity_and_backward_is_exactly_minus_coeff_times_upstream(
    coeff: float, as_tensor: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, requires_grad=True)
    upstream = torch.randn(4, 5)
    c = torch.tensor(coeff) if as_tensor else coeff
    y = grad_reverse(x, c)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert x.grad is not None
    assert torch.equal(x.grad, upstream * -coeff)


def test_jacobian_is_minus_coeff_times_the_numerical_one_and_backward_passes_gradcheck() -> None:
    torch.manual_seed(0)
    coeff = 0.7
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    analytical = torch.autograd.functional.jacobian(lambda t: grad_reverse(t, coeff), x)  # (3, 2, 3, 2)
    eps = 1e-6
    numerical = torch.zeros_like(analytical)
    with torch.no_grad():
        for idx in range(x.numel()):  # central differences of the forward pass (the identity)
            step = torch.zeros(x.numel(), dtype=torch.float64)
            step[idx] = eps
            step = step.view_as(x)
            diff = (grad_reverse(x + step, coeff) - grad_reverse(x - step, coeff)) / (2 * eps)
            numerical.view(6, 6)[:, idx] = diff.flatten()
    torch.testing.assert_close(numerical.view(6, 6), torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(analytical, -coeff * numerical)

    # the backward map v -> vector-Jacobian product is linear with Jacobian -coeff * I: gradcheck it
    # (numerical vs analytical derivatives of the backward pass, i.e. double backward)
    def vjp(v: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(grad_reverse(x, coeff), x, grad_outputs=v, create_graph=True)
        return grad

    v = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(vjp, (v,))
    torch.testing.assert_close(vjp(v), -coeff * v)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_works_under_autocast(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    features = nn.Linear(6, 4)
    head = DomainClassifier(4, hidden_dims=(8,), dropout=0.0)
    x = torch.randn(10, 6)
    is_target = torch.tensor([0.0] * 5 + [1.0] * 5)
    grads = {}
    for coeff in (None, 0.5):
        features.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            f = features(x)
            assert f.dtype == dtype
            z = head(f if coeff is None else grad_reverse(f, torch.tensor(coeff)))
            loss = DomainClassifier.loss(z, is_target)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        loss.backward()
        grads[coeff] = features.weight.grad.clone()  # type: ignore[union-attr]
    # reversed and scaled, up to the low-precision rounding of the upstream gradient
    torch.testing.assert_close(grads[0.5], -0.5 * grads[None], rtol=2e-2, atol=1e-4)


def test_dann_coeff_values() -> None:
    assert dann_coeff(0.0) == 0.0
    assert dann_coeff(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # 0.98661
    assert dann_coeff(0.5) == pytest.approx(math.tanh(2.5))
    assert dann_coeff(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)  # 0.99991
    assert dann_coeff(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    values = [dann_coeff(p / 10) for p in range(11)]
    assert values == sorted(values)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_gamma_must_be_positive(gamma: float) -> None:
    with pytest.raises(ValueError, match="gamma"):
        dann_coeff(0.5, gamma)
    with pytest.raises(ValueError, match="gamma"):
        GradientReversal(gamma=gamma)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_progress_outside_0_1_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="progress"):
        dann_coeff(bad)
    with pytest.raises(ValueError, match="progress"):
        GradientReversal(gamma=10.0).set_progress(bad)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), torch.ones(2)])
def test_bad_coeff_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="coeff"):
        grad_reverse(torch.ones(2), bad)  # type: ignore[arg-type]


def test_module_schedule_and_state_dict_round_trip() -> None:
    grl = GradientReversal(coeff=0.8, gamma=10.0)
    assert float(grl.coeff) == 0.0  # no reversal before the first step
    grl.set_progress(0.5)
    assert float(grl.coeff) == pytest.approx(0.8 * dann_coeff(0.5))
    resumed = GradientReversal(coeff=0.8, gamma=10.0)
    resumed.load_state_dict(grl.state_dict())  # what a checkpoint restores
    assert float(resumed.progress) == 0.5 and float(resumed.coeff) == float(grl.coeff)
    x = torch.ones(3, requires_grad=True)
    resumed(x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full((3,), -0.8 * dann_coeff(0.5)))
    fixed = GradientReversal(coeff=0.25)
    fixed.set_progress(0.9)  # no schedule: the coefficient stays
    assert float(fixed.coeff) == 0.25
