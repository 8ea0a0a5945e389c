"""barlow_twins_loss against a loop transcription of the Barlow Twins paper and against lightly.

Scale conventions: the paper's Eq. 2 defines the cross-correlation with the batch-centred
embeddings, ``C_ij = sum_b a_bi b_bj / (sqrt(sum_b a_bi^2) sqrt(sum_b b_bj^2))``, i.e. biased
standard deviations; its Algorithm 1 divides by ``z.std(0)`` (torch's unbiased std), which scales
``C`` by (M - 1) / M. We follow Eq. 2 and the authors' code (an affine-free BatchNorm: biased
variance plus eps = 1e-5), as lightly 1.6 does, so single-process values and gradients equal
lightly's. They differ under DDP: lightly standardises each rank's rows with that rank's statistics
and averages the per-rank C, we standardise with the global batch's (tests/ddp/test_ssl_losses_ddp.py).
"""

from __future__ import annotations

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins

from lightning_tl.losses import BARLOW_TWINS_EPS, BarlowTwinsLoss, barlow_twins_loss


def reference_barlow_twins(a: torch.Tensor, b: torch.Tensor, lambda_: float, eps: float) -> torch.Tensor:
    """Zbontar et al. 2021, Eq. 1-2, entry by entry, with eps added to each biased variance."""
    m, d = a.shape

    def centred(z: torch.Tensor, j: int) -> list[torch.Tensor]:
        mean = sum(z[r, j] for r in range(m)) / m
        return [z[r, j] - mean for r in range(m)]

    ca = [centred(a, j) for j in range(d)]
    cb = [centred(b, j) for j in range(d)]
    std_a = [torch.sqrt(sum(x**2 for x in col) / m + eps) for col in ca]
    std_b = [torch.sqrt(sum(x**2 for x in col) / m + eps) for col in cb]
    loss = a.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(ca[i][r] * cb[j][r] for r in range(m)) / (m * std_a[i] * std_b[j])
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambda_ * c_ij**2)
    return loss


def _pair(m: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, dtype=torch.float64, generator=gen)
    b = a + 0.5 * torch.randn(m, d, dtype=torch.float64, generator=gen)  # correlated views
    return a.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("m", [2, 3, 8])
@pytest.mark.parametrize("d", [1, 4, 7])
@pytest.mark.parametrize("lambda_", [0.0, 5e-3, 1.0])
def test_matches_reference_forward_and_backward(m: int, d: int, lambda_: float) -> None:
    a, b = _pair(m, d, seed=100 * m + d)
    ours = barlow_twins_loss(a, b, lambda_)
    ref = reference_barlow_twins(a, b, lambda_, BARLOW_TWINS_EPS)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for g_ours, g_ref in zip(
        torch.autograd.grad(ours, (a, b)), torch.autograd.grad(ref, (a, b)), strict=True
    ):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("m", [2, 5, 16])
@pytest.mark.parametrize("d", [3, 32])
@pytest.mark.parametrize("lambda_", [5e-3, 0.1])
def test_matches_lightly_values_and_gradients(m: int, d: int, lambda_: float) -> None:
    a, b = _pair(m, d, seed=7 * m + d)
    ours = barlow_twins_loss(a, b, lambda_)
    theirs = LightlyBarlowTwins(lambda_param=lambda_)(a, b)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    for g_ours, g_theirs in zip(
        torch.autograd.grad(ours, (a, b)), torch.autograd.grad(theirs, (a, b)), strict=True
    ):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-8, atol=1e-10)


def test_algorithm_1_unbiased_std_only_rescales_c() -> None:
    # With lambda = 0 the loss is sum_i (1 - C_ii)^2; Algorithm 1's z.std(0) gives C (M-1)/M times ours
    # (eps aside): checked on identical branches, where our C_ii = var / (var + eps).
    a, _ = _pair(6, 3, seed=3)
    a = a.detach()
    var = a.var(dim=0, correction=0)
    expected = ((1 - var / (var + BARLOW_TWINS_EPS)) ** 2).sum()
    torch.testing.assert_close(barlow_twins_loss(a, a, lambda_=0.0), expected, rtol=1e-9, atol=1e-20)
    normed = (a - a.mean(0)) / a.std(0)  # the paper's Algorithm 1
    c_alg1 = normed.T @ normed / a.shape[0]
    torch.testing.assert_close(torch.diagonal(c_alg1), torch.full((3,), 5 / 6, dtype=torch.float64))


def test_degenerate_inputs_exact_values() -> None:
    # Centred, orthogonal columns with variance 1: C = I / (1 + eps) for identical branches.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    shrink = 1 / (1 + BARLOW_TWINS_EPS)
    assert barlow_twins_loss(z, z).item() == pytest.approx(2 * (1 - shrink) ** 2, rel=1e-9)
    # Anti-correlated branches: C = -I / (1 + eps).
    assert barlow_twins_loss(z, -z).item() == pytest.approx(2 * (1 + shrink) ** 2, rel=1e-12)
    # Two copies of one feature: C is all (1 + eps)^-1, the off-diagonal pays lambda per entry.
    y = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins_loss(y, y, lambda_=0.5).item() == pytest.approx(
        2 * (1 - shrink) ** 2 + 0.5 * 2 * shrink**2, rel=1e-12
    )
    # A constant feature standardises to 0 (the eps keeps it finite): C_00 = 0 costs exactly 1.
    const = torch.tensor([[3.0, 1.0], [3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    loss = barlow_twins_loss(const, const)
    loss.backward()
    assert loss.item() == pytest.approx(1 + (1 - shrink) ** 2, rel=1e-12)
    assert const.grad is not None and torch.isfinite(const.grad).all()


def test_invariant_to_per_feature_shift_and_scale() -> None:
    # Exactly invariant but for the eps added to the variances (relative effect ~ eps / var).
    a, b = _pair(8, 4, seed=4)
    a, b = a.detach(), b.detach()
    shift, scale = torch.randn(4, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    torch.testing.assert_close(
        barlow_twins_loss(a * scale + shift, b), barlow_twins_loss(a, b), rtol=1e-4, atol=1e-8
    )


def test_gather_without_process_group_is_local_and_module_wrapper() -> None:
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    assert torch.equal(barlow_twins_loss(a, b, gather=True), barlow_twins_loss(a, b))
    module = BarlowTwinsLoss(lambda_=0.01, gather=True)
    assert torch.equal(module(a, b), barlow_twins_loss(a, b, 0.01))
    assert "lambda_=0.01" in repr(module)


def test_half_precision_is_scored_in_float32() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    out = barlow_twins_loss(a.half(), b.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, barlow_twins_loss(a.half().float(), b.bfloat16().float()))


def test_autocast_does_not_lower_the_precision() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = barlow_twins_loss(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, barlow_twins_loss(a, b), rtol=1e-6, atol=1e-6)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"lambda_ must be >= 0, got -0.1; Barlow Twins uses 5e-3"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 3), lambda_=-0.1)
    with pytest.raises(ValueError, match="lambda_ must be >= 0"):
        BarlowTwinsLoss(lambda_=float("nan"))
    with pytest.raises(
        ValueError, match=r"z1 and z2 must both have shape \(N, D\); got \(4, 3\) and \(5, 3\)"
    ):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"Barlow Twins needs at least 2 rows per batch.*got N=1"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
