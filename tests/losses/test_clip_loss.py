"""clip_loss against open_clip's ClipLoss and a loop transcription of CLIP's Figure 3."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from lightning_tl.losses import CLIPLoss, clip_loss


def reference_clip_loss(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Radford et al. 2021, Fig. 3, one row and one column at a time."""
    n = images.shape[0]
    logits = [[scale * torch.dot(images[i], texts[j]) for j in range(n)] for i in range(n)]
    rows = sum(-logits[i][i] + torch.logsumexp(torch.stack(logits[i]), 0) for i in range(n)) / n
    cols = sum(
        -logits[j][j] + torch.logsumexp(torch.stack([logits[i][j] for i in range(n)]), 0) for j in range(n)
    )
    return (rows + cols / n) / 2


def _inputs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, d, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    texts = F.normalize(torch.randn(n, d, dtype=torch.float64, generator=gen), dim=1).requires_grad_()
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64).exp().detach().requires_grad_()
    return images, texts, scale


@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("scale_value", [1.0, 14.3, 100.0])
def test_equals_open_clip_forward_and_backward(n: int, scale_value: float) -> None:
    images, texts, scale = _inputs(n, 5, seed=n)
    scale = torch.tensor(scale_value, dtype=torch.float64, requires_grad=True)
    ours = clip_loss(images, texts, scale)
    theirs = ClipLoss()(images, texts, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    ref = reference_clip_loss(images, texts, scale)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    g_ours = torch.autograd.grad(ours, (images, texts, scale))
    g_theirs = torch.autograd.grad(ClipLoss()(images, texts, scale), (images, texts, scale))
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_exact_value_on_orthogonal_pairs() -> None:
    # Pair k at basis vector e_k: each row/column has one logit s and N-1 zeros.
    n, s = 4, 10.0
    z = torch.eye(n, 6, dtype=torch.float64)
    expected = -math.log(math.exp(s) / (math.exp(s) + n - 1))
    assert clip_loss(z, z.clone(), s).item() == pytest.approx(expected, rel=1e-6)
    assert clip_loss(z, z.clone(), s, gather=True, local_loss=True).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_module_wrapper_and_half_precision() -> None:
    images, texts, scale = _inputs(6, 8, seed=0)
    expected = clip_loss(images, texts, scale)
    torch.testing.assert_close(CLIPLoss()(images, texts, scale), expected)
    half = clip_loss(images.bfloat16(), texts.bfloat16(), scale.float())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(expected.item(), abs=0.05)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        clip_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="needs gather=True"):
        clip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, local_loss=True)
