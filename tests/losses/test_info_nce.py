"""InfoNCE (MoCo) against a loop transcription of MoCo's Eq. 1, forward and backward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_tl.losses import InfoNCELoss, info_nce_loss


def reference_info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor | None, tau: float
) -> torch.Tensor:
    """He et al. 2020, Eq. 1, one query at a time: -log exp(q.k+/t) / (exp(q.k+/t) + sum exp(q.k-/t))."""
    n = q.shape[0]
    total = q.new_zeros(())
    for i in range(n):
        positive = torch.exp(torch.dot(q[i], k[i]) / tau)
        negatives = list(queue) if queue is not None else [k[j] for j in range(n) if j != i]
        denominator = positive + sum(torch.exp(torch.dot(q[i], neg) / tau) for neg in negatives)
        total = total - torch.log(positive / denominator)
    return total / n


def _unit(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64, generator=gen), dim=-1)


# k = 0: in-batch negatives (queue=None); one query without a queue is test_single_candidate
SIZES = [(n, k) for n in (1, 3, 8) for k in (0, 5, 17) if (n, k) != (1, 0)]


@pytest.mark.parametrize(("n", "k"), SIZES)
@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_matches_reference_forward_and_backward(n: int, k: int, tau: float) -> None:
    gen = torch.Generator().manual_seed(n * 100 + k)
    q = _unit(n, 16, gen=gen).requires_grad_()
    key = _unit(n, 16, gen=gen).requires_grad_()
    queue = _unit(k, 16, gen=gen).requires_grad_() if k else None
    ours = info_nce_loss(q, key, queue, tau)
    ref = reference_info_nce(q, key, queue, tau)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    inputs = (q, key) if queue is None else (q, key, queue)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(ref, inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_single_candidate() -> None:
    # one query, no queue: the positive is the only candidate, the loss is exactly 0
    q = F.normalize(torch.randn(1, 4), dim=1)
    assert info_nce_loss(q, q.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_exact_value_orthogonal_queue() -> None:
    # positive similarity 1, K negatives at similarity 0
    tau, k = 0.2, 6
    q = torch.eye(8)[:2]
    queue = torch.eye(8)[2 : 2 + k]
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + k))
    assert info_nce_loss(q, q.clone(), queue, tau).item() == pytest.approx(expected, rel=1e-6)


def test_low_temperature_is_finite_in_float32_and_half() -> None:
    gen = torch.Generator().manual_seed(0)
    q, key, queue = (_unit(4, 8, gen=gen).float() for _ in range(3))
    assert torch.isfinite(info_nce_loss(q, key, queue, 0.01))
    half = info_nce_loss(q.half(), key.half(), queue.half(), 0.01)
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_key_gets_no_gradient_when_detached() -> None:
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    key = F.normalize(torch.randn(4, 8), dim=1)
    info_nce_loss(q, key, torch.randn(10, 8)).backward()
    assert q.grad is not None and key.grad is None


def test_module_wrapper_and_bad_inputs() -> None:
    q, key, queue = torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 8)
    assert InfoNCELoss(0.3)(q, key, queue) == info_nce_loss(q, key, queue, 0.3)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        info_nce_loss(q, key, queue, 0.0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        InfoNCELoss(-1)
    with pytest.raises(ValueError, match=r"query and key must both have shape \(N, D\)"):
        info_nce_loss(q, key[:3])
    with pytest.raises(ValueError, match=r"queue must have shape \(K, 8\)"):
        info_nce_loss(q, key, torch.randn(10, 7))
