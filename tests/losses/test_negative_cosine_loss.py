"""negative_cosine_loss (BYOL / SimSiam) against a loop transcription of SimSiam's D(p, z) and lightly."""

from __future__ import annotations

import pytest
import torch
from lightly.loss import NegativeCosineSimilarity

from lightning_tl.losses import NegativeCosineLoss, negative_cosine_loss


def reference_negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Chen & He 2021, Eq. 1: D(p, z) = -p/||p|| . z/||z||, one pair at a time, averaged; z constant."""
    z = z.detach()
    total = p.new_zeros(())
    for i in range(p.shape[0]):
        dot = sum(p[i, k] * z[i, k] for k in range(p.shape[1]))
        p_norm = torch.sqrt(sum(p[i, k] ** 2 for k in range(p.shape[1])))
        z_norm = torch.sqrt(sum(z[i, k] ** 2 for k in range(p.shape[1])))
        total = total - dot / (p_norm * z_norm)
    return total / p.shape[0]


def _pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, d, dtype=torch.float64, generator=gen).requires_grad_()
    z = torch.randn(n, d, dtype=torch.float64, generator=gen).requires_grad_()
    return p, z


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("d", [1, 2, 16])
def test_matches_reference_forward_and_backward(n: int, d: int) -> None:
    p, z = _pair(n, d, seed=10 * n + d)
    ours = negative_cosine_loss(p, z)
    ref = reference_negative_cosine(p, z)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours, p)
    (g_ref,) = torch.autograd.grad(ref, p)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("d", [2, 32])
def test_matches_lightly_values_and_gradients(n: int, d: int) -> None:
    # lightly's NegativeCosineSimilarity does not stop the gradient itself (its SimSiam model
    # detaches z); the gradients with respect to p agree.
    p, z = _pair(n, d, seed=100 + n * d)
    ours = negative_cosine_loss(p, z)
    theirs = NegativeCosineSimilarity()(p, z)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(ours, p)[0], torch.autograd.grad(theirs, p)[0], rtol=1e-10, atol=1e-12
    )


def test_stop_gradient_on_z() -> None:
    p, z = _pair(4, 6, seed=1)
    loss = negative_cosine_loss(p, z)
    g_p, g_z = torch.autograd.grad(loss, (p, z), allow_unused=True)
    assert g_p is not None and g_p.abs().sum() > 0
    assert g_z is None  # z never entered the graph


def test_byol_scale_is_two_plus_twice_this() -> None:
    # Grill et al. 2020, Eq. 2: || p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z).
    p, z = _pair(5, 7, seed=2)
    byol = ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(2 + 2 * negative_cosine_loss(p, z), byol, rtol=1e-12, atol=1e-12)


def test_degenerate_inputs_exact_values() -> None:
    x = torch.tensor([[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]], dtype=torch.float64)
    assert negative_cosine_loss(x, x.clone()).item() == pytest.approx(-1.0, abs=1e-15)
    assert negative_cosine_loss(x, 5.0 * x).item() == pytest.approx(-1.0, abs=1e-15)  # scale-free
    assert negative_cosine_loss(x, -x).item() == pytest.approx(1.0, abs=1e-15)
    assert negative_cosine_loss(torch.eye(3)[:2], torch.eye(3)[1:]).item() == 0.0  # orthogonal
    # A zero row has cosine 0 and a finite gradient.
    p = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = negative_cosine_loss(p, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    loss.backward()
    assert loss.item() == -0.5
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_half_precision_is_scored_in_float32() -> None:
    p, z = torch.randn(4, 8), torch.randn(4, 8)
    out = negative_cosine_loss(p.half(), z.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, negative_cosine_loss(p.half().float(), z.half().float()))


def test_module_wrapper() -> None:
    p, z = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(NegativeCosineLoss()(p, z), negative_cosine_loss(p, z))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"p and z must both have shape \(N, D\); got \(4, 3\) and \(4, 5\)"):
        negative_cosine_loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        negative_cosine_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="at least one row"):
        negative_cosine_loss(torch.randn(0, 3), torch.randn(0, 3))
