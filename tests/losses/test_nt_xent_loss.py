"""NT-Xent against a loop transcription of SimCLR's Algorithm 1, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_tl.losses import NTXentLoss, nt_xent_loss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """Chen et al. 2020, Algorithm 1, one anchor at a time (scalar ops; autograd gives the gradient)."""
    n = z1.shape[0]
    z = [v / v.norm() for v in list(z1) + list(z2)]  # z_1..z_2N, the pairs are (k, k + N)
    total = z1.new_zeros(())
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [torch.dot(z[i], z[k]) / tau for k in range(2 * n)]
        denominator = sum(torch.exp(sims[k]) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(sims[j]) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("d", [4, 16])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_matches_reference_forward_and_backward(n: int, d: int, tau: float) -> None:
    gen = torch.Generator().manual_seed(n * 100 + d)
    a = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(n, d, dtype=torch.float64, generator=gen, requires_grad=True)
    ours = nt_xent_loss(a, b, tau)
    ref = reference_nt_xent(a, b, tau)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_ours = torch.autograd.grad(ours, (a, b))
    g_ref = torch.autograd.grad(ref, (a, b))
    for x, y in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-11)


def test_identical_embeddings_give_log_2n_minus_1() -> None:
    # Every similarity is 1: the positive is one of 2N-1 equal candidates.
    n = 5
    z = torch.ones(n, 3)
    assert nt_xent_loss(z, z.clone(), 0.3).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_orthogonal_pairs_exact_value() -> None:
    # Image k has both views at basis vector e_k: positive similarity 1, all 2N-2 negatives 0.
    n, tau = 3, 0.5
    z = torch.eye(n, 4)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * n - 2))
    assert nt_xent_loss(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-6)


def test_not_normalised_inputs_are_normalised() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    torch.testing.assert_close(nt_xent_loss(a * 7.0, b * 0.01), nt_xent_loss(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_stable_at_low_temperature(dtype: torch.dtype) -> None:
    # exp(1/0.05) = 4.9e8 overflows fp16; the loss must still be finite and agree with float64.
    gen = torch.Generator().manual_seed(0)
    a = (torch.randn(16, 32, generator=gen) * 100).to(dtype).requires_grad_()
    b = (a.detach().float() + 0.01 * torch.randn(16, 32, generator=gen)).to(dtype).requires_grad_()
    loss = nt_xent_loss(a, b, 0.05)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad.float()).all()
    ref = nt_xent_loss(a.detach().double(), b.detach().double(), 0.05)
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2, abs=1e-2)


def test_module_wrapper() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    assert NTXentLoss(0.2)(a, b).item() == pytest.approx(nt_xent_loss(a, b, 0.2).item())
    assert "temperature=0.2" in repr(NTXentLoss(0.2))


@pytest.mark.parametrize("tau", [0.0, -0.5])
def test_rejects_bad_temperature(tau: float) -> None:
    with pytest.raises(ValueError, match=f"temperature must be > 0, got {tau}"):
        nt_xent_loss(torch.randn(2, 3), torch.randn(2, 3), tau)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(tau)


def test_rejects_mismatched_shapes_and_single_image() -> None:
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 5\)"):
        nt_xent_loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="at least 2 images"):
        nt_xent_loss(torch.randn(1, 3), torch.randn(1, 3))
