"""mcc_loss against a loop transcription of the MCC paper's formulas (Jin et al. 2020) and its gradient."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_tl.losses import ENTROPY_EPS, MCCLoss, certainty_weights, mcc_loss


def reference_mcc(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Jin et al. 2020, Sec. 3, one entry at a time (scalar ops; autograd gives the gradient).

    Y_ij = softmax(logits_i / T)_j; H_i = -sum_j Y_ij log(Y_ij + 1e-5) (the authors' entropy);
    W_i = N (1 + exp(-H_i)) / sum_k (1 + exp(-H_k)), constants; C_jk = sum_i W_i Y_ij Y_ik;
    C~_jk = C_jk / sum_k' C_jk'; loss = (sum_jk C~_jk - sum_j C~_jj) / num_classes.
    """
    n, c = logits.shape
    y = [[None] * c for _ in range(n)]
    for i in range(n):
        exps = [torch.exp(logits[i, j] / temperature) for j in range(c)]
        total = sum(exps)
        for j in range(c):
            y[i][j] = exps[j] / total
    w = []
    for i in range(n):
        h = -sum(y[i][j].item() * math.log(y[i][j].item() + 1e-5) for j in range(c))  # a constant
        w.append(1.0 + math.exp(-h))
    weights = [n * wi / sum(w) for wi in w]
    conf = [[sum(weights[i] * y[i][j] * y[i][k] for i in range(n)) for k in range(c)] for j in range(c)]
    norm = [[conf[j][k] / sum(conf[j]) for k in range(c)] for j in range(c)]
    off_diagonal = sum(norm[j][k] for j in range(c) for k in range(c) if j != k)
    return off_diagonal / c


@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("c", [2, 3, 10])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5, 10.0])
def test_matches_reference_forward_and_backward(n: int, c: int, temperature: float) -> None:
    gen = torch.Generator().manual_seed(100 * n + c)
    logits = (3 * torch.randn(n, c, dtype=torch.float64, generator=gen)).requires_grad_()
    ours = mcc_loss(logits, temperature)
    ref = reference_mcc(logits, temperature)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-12)


def test_authors_column_normalisation_gives_the_same_loss_and_gradient() -> None:
    """The authors divide C by its row sums broadcast along rows (column j by sum_k C_jk): same result."""
    logits = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logits.requires_grad_()
    probs = torch.softmax(logits / 2.5, dim=1)
    entropy = -(probs * torch.log(probs + ENTROPY_EPS)).sum(1).detach()
    w = 1 + torch.exp(-entropy)
    w = 9 * w / w.sum()
    conf = (probs * w[:, None]).T @ probs
    conf = conf / conf.sum(dim=1)  # (C, C) / (C,): column j divided by row j's sum
    theirs = (conf.sum() - conf.trace()) / 5
    ours = mcc_loss(logits, 2.5)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0], rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("c", [2, 4, 10])
def test_exact_values_on_degenerate_inputs(c: int) -> None:
    # equal logits: every prediction uniform, every row of C~ uniform: 1 - 1/C off the diagonal
    assert float(mcc_loss(torch.zeros(6, c))) == pytest.approx(1 - 1 / c)
    # one confident prediction per class, no sharing: almost no confusion
    assert float(mcc_loss(200 * torch.eye(c))) == pytest.approx(0.0, abs=1e-12)
    # a single example: C = w y y^T, every row normalised is y itself, so the trace is sum_j y_j = 1
    assert float(mcc_loss(torch.arange(c, dtype=torch.float64)[None])) == pytest.approx(1 - 1 / c)


def test_entropy_weights_follow_the_paper() -> None:
    probs = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    w = certainty_weights(probs)
    h = torch.tensor([0.0, math.log(3), math.log(2)])  # exact entropies; the 1e-5 guard moves them slightly
    torch.testing.assert_close(w, 1 + torch.exp(-h), rtol=1e-4, atol=0)
    assert float(w[0]) == pytest.approx(2.0, abs=2e-5) and float(w[1]) == pytest.approx(4 / 3, rel=1e-4)
    x = torch.randn(5, 3, requires_grad=True)
    assert not certainty_weights(torch.softmax(x, 1)).requires_grad  # constants for the gradient


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_under_autocast_the_loss_is_float32(dtype: torch.dtype) -> None:
    logits = torch.randn(8, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        loss = mcc_loss(logits.to(dtype))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_extreme_logits_stay_finite() -> None:
    logits = torch.tensor([[1e4, 0.0, 0.0], [1e4, -1e4, 0.0]], requires_grad=True)  # class 1, 2 get ~0 mass
    loss = mcc_loss(logits, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def test_module_wrapper() -> None:
    logits = torch.randn(4, 3)
    assert torch.equal(MCCLoss(1.5)(logits), mcc_loss(logits, 1.5))
    assert "temperature=1.5" in repr(MCCLoss(1.5))


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        mcc_loss(torch.randn(4, 3), temperature)
    with pytest.raises(ValueError, match="temperature"):
        MCCLoss(temperature)


@pytest.mark.parametrize("shape", [(4,), (4, 1), (0, 3), (2, 3, 4)])
def test_bad_logits(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        mcc_loss(torch.randn(shape))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        certainty_weights(torch.randn(3))
