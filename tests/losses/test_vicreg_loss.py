"""vicreg_loss against a loop transcription of the VICReg paper and against lightly.

Scale conventions: the paper's Eq. 5 sums the squared distances over the D features and its
Eq. 6 adds the two branches' variance terms; the authors' released code (with which the weights
25 / 25 / 1 were tuned) averages both: the invariance is the element-wise mean squared error and
the variance term is (v(Z) + v(Z')) / 2. We follow the code, as lightly 1.6 does; the reference
below transcribes Eq. 1-6 with those two divisions made explicit. Under DDP lightly computes the
invariance on each rank's rows (a per-rank value whose mean is the global one) and the rest on the
gathered batch; we return the global loss on every rank (tests/ddp/test_ssl_losses_ddp.py).
"""

from __future__ import annotations

import pytest
import torch
from lightly.loss import VICRegLoss as LightlyVICReg

from lightning_tl.losses import VICREG_EPS, VICRegLoss, vicreg_loss


def _column(z: torch.Tensor, j: int) -> list[torch.Tensor]:
    return [z[i, j] for i in range(z.shape[0])]


def reference_variance(z: torch.Tensor, gamma: float = 1.0, eps: float = VICREG_EPS) -> torch.Tensor:
    """Eq. 1-2: v(Z) = 1/d sum_j max(0, gamma - sqrt(Var(z^j) + eps)), Var unbiased."""
    n, d = z.shape
    total = z.new_zeros(())
    for j in range(d):
        col = _column(z, j)
        mean = sum(col) / n
        var = sum((x - mean) ** 2 for x in col) / (n - 1)
        total = total + torch.clamp(gamma - torch.sqrt(var + eps), min=0)
    return total / d


def reference_covariance(z: torch.Tensor) -> torch.Tensor:
    """Eq. 3-4: C(Z) = 1/(n-1) sum_i (z_i - mean)(z_i - mean)^T, c(Z) = 1/d sum_{k != l} C_kl^2."""
    n, d = z.shape
    means = [sum(_column(z, j)) / n for j in range(d)]
    total = z.new_zeros(())
    for k in range(d):
        for l_ in range(d):
            if k != l_:
                c_kl = sum((z[i, k] - means[k]) * (z[i, l_] - means[l_]) for i in range(n)) / (n - 1)
                total = total + c_kl**2
    return total / d


def reference_vicreg(a: torch.Tensor, b: torch.Tensor, lam: float, mu: float, nu: float) -> torch.Tensor:
    """Eq. 6 with the code's conventions: s averaged over features, the two variance terms averaged."""
    n, d = a.shape
    invariance = sum((a[i, k] - b[i, k]) ** 2 for i in range(n) for k in range(d)) / n  # Eq. 5
    invariance = invariance / d  # the code's mean squared error
    variance = (reference_variance(a) + reference_variance(b)) / 2
    covariance = reference_covariance(a) + reference_covariance(b)
    return lam * invariance + mu * variance + nu * covariance


def _pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Features of spread 0.3 to 2: some standard deviations below gamma = 1, so the hinge is active.
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    a = torch.randn(n, d, dtype=torch.float64, generator=gen) * scale
    b = a + 0.3 * torch.randn(n, d, dtype=torch.float64, generator=gen)
    return a.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("d", [1, 4, 7])
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 3.0)])
def test_matches_reference_forward_and_backward(n: int, d: int, weights: tuple[float, float, float]) -> None:
    a, b = _pair(n, d, seed=100 * n + d)
    ours = vicreg_loss(a, b, *weights)
    ref = reference_vicreg(a, b, *weights)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for g_ours, g_ref in zip(
        torch.autograd.grad(ours, (a, b)), torch.autograd.grad(ref, (a, b)), strict=True
    ):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (5.0, 10.0, 0.5)])
def test_matches_lightly_values_and_gradients(n: int, d: int, weights: tuple[float, float, float]) -> None:
    a, b = _pair(n, d, seed=7 * n + d)
    ours = vicreg_loss(a, b, *weights)
    lam, mu, nu = weights
    theirs = LightlyVICReg(lambda_param=lam, mu_param=mu, nu_param=nu)(a, b)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (a, b)), torch.autograd.grad(theirs, (a, b)), strict=True
    ):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-9, atol=1e-11)


def test_degenerate_inputs_exact_values() -> None:
    # Identical, decorrelated branches with std > gamma: every term is 0.
    z = 2 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert vicreg_loss(z, z).item() == 0.0
    # Complete collapse: no invariance or covariance cost, std = sqrt(eps) = 0.01 in every feature.
    collapsed = torch.zeros(5, 3, dtype=torch.float64)
    assert vicreg_loss(collapsed, collapsed).item() == pytest.approx(25.0 * (1 - VICREG_EPS**0.5), rel=1e-12)
    # Two copies of one feature: Var = 2, off-diagonal covariance 2 twice, over D = 2, per branch.
    y = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert vicreg_loss(y, y).item() == pytest.approx(2 * (2 * 2.0**2 / 2), rel=1e-12)
    # Branches differing by a constant 1 everywhere: only the invariance term, 25 * 1.
    assert vicreg_loss(z, z + 1).item() == pytest.approx(25.0, rel=1e-12)


def test_gather_without_process_group_is_local_and_module_wrapper() -> None:
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.equal(vicreg_loss(a, b, gather=True), vicreg_loss(a, b))
    module = VICRegLoss(sim_weight=1.0, var_weight=2.0, cov_weight=3.0, gather=True)
    assert torch.equal(module(a, b), vicreg_loss(a, b, 1.0, 2.0, 3.0))
    assert "var_weight=2.0" in repr(module)


def test_half_precision_is_scored_in_float32() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    out = vicreg_loss(a.half(), b.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, vicreg_loss(a.half().float(), b.half().float()))


def test_autocast_does_not_lower_the_precision() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vicreg_loss(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, vicreg_loss(a, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["sim_weight", "var_weight", "cov_weight"])
def test_negative_weights_raise(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} must be >= 0, got -1.0; VICReg uses sim_weight=25"):
        vicreg_loss(torch.randn(4, 3), torch.randn(4, 3), **{name: -1.0})
    with pytest.raises(ValueError, match=rf"{name} must be >= 0"):
        VICRegLoss(**{name: -1.0})


def test_bad_shapes_raise() -> None:
    with pytest.raises(
        ValueError, match=r"z1 and z2 must both have shape \(N, D\); got \(4, 3\) and \(4, 2\)"
    ):
        vicreg_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"VICReg needs at least 2 rows per batch.*got N=1"):
        vicreg_loss(torch.randn(1, 3), torch.randn(1, 3))
