"""CDAN: the multilinear maps and CDAN+E weights by hand, gradients by hand, resume, no target labels."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _da_fit import X_S, X_T, Y_S, TinyBackbone, assert_resumes_exactly
from torch import Tensor

from lightning_tl.modules import CDAN, DANN
from lightning_tl.modules.cdan import cdan_entropy_weights
from lightning_tl.nn import MultilinearMap, SmallConvNet, multilinear_map

# training_step called directly, without a Trainer, logs nothing (Lightning warns so)
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")


# ---- the maps and the weights against hand computation ------------------------------------------
def test_multilinear_map_is_the_flattened_outer_product() -> None:
    f = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    g = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    out = multilinear_map(f, g)
    assert out.shape == (2, 6)
    for b in range(2):
        for j in range(3):
            for c in range(2):
                assert float(out[b, j * 2 + c]) == pytest.approx(float(f[b, j] * g[b, c]))
    assert out[0].tolist() == pytest.approx([0.2, 0.8, 0.4, 1.6, 0.6, 2.4])


def test_randomized_map_against_hand_computation() -> None:
    gen = torch.Generator().manual_seed(0)
    f, g = torch.randn(3, 4, generator=gen), torch.softmax(torch.randn(3, 5, generator=gen), 1)
    r_f, r_g = torch.randn(6, 4, generator=gen), torch.randn(6, 5, generator=gen)
    out = multilinear_map(f, g, (r_f, r_g))
    assert out.shape == (3, 6)
    for b in range(3):
        for k in range(6):
            rf = sum(float(r_f[k, j]) * float(f[b, j]) for j in range(4))
            rg = sum(float(r_g[k, c]) * float(g[b, c]) for c in range(5))
            assert float(out[b, k]) == pytest.approx(rf * rg / math.sqrt(6), rel=1e-5, abs=1e-6)


def test_randomized_map_preserves_inner_products_in_expectation() -> None:
    """Long et al. 2018, Theorem 1: E <T_rand(f, g), T_rand(f', g')> = <f (x) g, f' (x) g'>."""
    gen = torch.Generator().manual_seed(1)
    f, g = torch.randn(2, 5, generator=gen, dtype=torch.float64), torch.rand(2, 3, generator=gen)
    g = (g / g.sum(1, keepdim=True)).double()
    exact = float(multilinear_map(f, g).prod(0).sum())  # <f0 (x) g0, f1 (x) g1>
    t = MultilinearMap(5, 3, output_dim=200_000, seed=3).double()(f, g)
    assert float((t[0] * t[1]).sum()) == pytest.approx(exact, abs=0.03 * float(f.norm(dim=1).prod()))


def test_random_matrices_are_fixed_seeded_buffers() -> None:
    a, b, c = (
        MultilinearMap(8, 3, 16, seed=0),
        MultilinearMap(8, 3, 16, seed=0),
        MultilinearMap(8, 3, 16, seed=1),
    )
    state = a.state_dict()
    assert set(state) == {"random_features", "random_predictions"}  # in checkpoints
    assert state["random_features"].shape == (16, 8) and state["random_predictions"].shape == (16, 3)
    assert not list(a.parameters())  # never trained
    assert torch.equal(a.random_features, b.random_features) and not torch.equal(
        a.random_features, c.random_features
    )
    before = torch.get_rng_state()
    MultilinearMap(8, 3, 16)
    assert torch.equal(torch.get_rng_state(), before)  # drawn from their own generator
    assert not MultilinearMap(8, 3).state_dict()  # the full map has nothing to save


def test_cdan_e_weights_sum_to_one_in_each_domain() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(7, 4, generator=gen), 1)
    is_target = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    w = cdan_entropy_weights(probs, is_target)
    assert float(w[:3].sum()) == pytest.approx(1.0) and float(w[3:].sum()) == pytest.approx(1.0)
    raw = [1 + math.exp(sum(float(p) * math.log(float(p) + 1e-5) for p in row)) for row in probs]
    for i in range(7):
        domain = raw[:3] if i < 3 else raw[3:]
        assert float(w[i]) == pytest.approx(raw[i] / sum(domain), rel=1e-5)
    uniform = cdan_entropy_weights(torch.full((4, 4), 0.25), torch.tensor([0, 0, 1, 1]))
    assert uniform.tolist() == pytest.approx([0.5] * 4)  # equal certainty: the plain per-domain mean
    with pytest.raises(ValueError, match="source and target"):
        cdan_entropy_weights(probs[:3], is_target[:3])


# ---- the module's step by hand ----------------------------------------------------------------
W, U, C, A, B = [0.5, -1.0, 2.0], [[1.5], [-0.5]], [0.1, -0.2], [[0.8, -0.6]], [-0.3]


def _tiny_cdan(coeff: float, **kwargs: Any) -> CDAN:
    model = CDAN(
        backbone=TinyBackbone(3), in_channels=3, num_classes=2, domain_hidden=(), domain_dropout=0.0, **kwargs
    )
    with torch.no_grad():
        model.backbone.linear.weight.copy_(torch.tensor([W]))
        model.classifier.linear.weight.copy_(torch.tensor(U))
        model.classifier.linear.bias.copy_(torch.tensor(C))
        model.domain_classifier.layers[0].weight.copy_(torch.tensor(A))  # reads T(f, g) = (f g_0, f g_1)
        model.domain_classifier.layers[0].bias.copy_(torch.tensor(B))
    model.grl.coeff.fill_(coeff)
    return model


def _reference(entropy: bool, detach: bool) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The CDAN(+E) step written out: (classification loss, domain loss, parameters w, u, c, a, b)."""
    w, u, c = torch.tensor(W, requires_grad=True), torch.tensor(U).flatten().requires_grad_(), torch.tensor(C)
    c.requires_grad_()
    a, b = torch.tensor(A).flatten().requires_grad_(), torch.tensor(B).requires_grad_()
    f = torch.cat([X_S, X_T]).flatten(1) @ w  # (5,)
    logits = f[:, None] * u + c  # (5, 2)
    g = torch.softmax(logits, 1)
    g = g.detach() if detach else g
    z = (f[:, None] * g) @ a + b  # domain logits (5,)
    t = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    losses = F.binary_cross_entropy_with_logits(z, t, reduction="none")
    if entropy:
        p = g.detach()
        weight = 1 + torch.exp((p * torch.log(p + 1e-5)).sum(1))
        weight = torch.cat([weight[:2] / weight[:2].sum(), weight[2:] / weight[2:].sum()])
        domain = (weight * losses).sum() / 2
    else:
        domain = losses.mean()
    return F.cross_entropy(logits[:2], Y_S), domain, [w, u, c, a, b]


@pytest.mark.parametrize("entropy", [False, True])
@pytest.mark.parametrize("detach", [True, False])
def test_discriminator_gets_plain_gradient_features_get_reversed_one(entropy: bool, detach: bool) -> None:
    coeff = 0.6
    model = _tiny_cdan(
        coeff, conditioning="multilinear", entropy_conditioning=entropy, detach_predictions=detach
    )
    loss = model.training_step({"source": (X_S, Y_S), "target": X_T}, 0)
    loss.backward()
    cls, dom, params = _reference(entropy, detach)
    torch.testing.assert_close(loss, cls + dom)
    g_cls = torch.autograd.grad(cls, params, allow_unused=True, retain_graph=True)
    g_dom = torch.autograd.grad(dom, params, allow_unused=True)
    zero = torch.zeros(())

    def expected(i: int) -> Tensor:  # the classifier and backbone: plain label gradient, reversed domain one
        return (g_cls[i] if g_cls[i] is not None else zero) - coeff * (
            g_dom[i] if g_dom[i] is not None else zero
        )

    got = [
        model.backbone.linear.weight.grad,
        model.classifier.linear.weight.grad,
        model.classifier.linear.bias.grad,
        model.domain_classifier.layers[0].weight.grad,
        model.domain_classifier.layers[0].bias.grad,
    ]
    assert all(grad is not None for grad in got)
    for i in range(3):
        torch.testing.assert_close(got[i].flatten(), expected(i).flatten())  # type: ignore[union-attr]
    torch.testing.assert_close(got[3].flatten(), g_dom[3])  # type: ignore[union-attr]
    torch.testing.assert_close(got[4].flatten(), g_dom[4])  # type: ignore[union-attr]
    if detach:  # g detached: the domain loss does not reach the classifier
        assert g_dom[1] is None and g_dom[2] is None


def test_without_conditioning_cdan_is_dann() -> None:
    batch = {
        "source": (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])),
        "target": torch.randn(5, 3, 16, 16),
    }
    losses = []
    for cls, kwargs in ((DANN, {}), (CDAN, {"conditioning": None})):
        torch.manual_seed(0)
        model = cls(backbone=SmallConvNet(in_chans=3, channels=(4, 8), grid=1), domain_hidden=(16,), **kwargs)
        model.grl.coeff.fill_(0.5)
        torch.manual_seed(1)  # dropout
        losses.append(model.training_step(batch, 0))
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize(
    ("conditioning", "width", "randomized"),
    [("auto", 1024, True), ("multilinear", 7680, False), ("randomized", 1024, True), (None, 768, False)],
)
def test_conditioning_sets_the_discriminator_input(
    conditioning: str | None, width: int, randomized: bool
) -> None:
    model = CDAN(backbone=SmallConvNet(in_chans=3), conditioning=conditioning)  # type: ignore[arg-type]
    assert model.domain_classifier.layers[0].in_features == width
    assert (hasattr(model, "multilinear_map") and model.multilinear_map.randomized) == randomized
    small = CDAN(
        backbone=SmallConvNet(in_chans=3, channels=(8, 4), grid=2), num_classes=10
    )  # 16 * 10 <= 4096
    assert small.domain_classifier.layers[0].in_features == 160 and not small.multilinear_map.randomized
    assert model.hparams["conditioning"] == conditioning  # type: ignore[index]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cdan_e_step_under_autocast(dtype: torch.dtype) -> None:
    model = CDAN(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), entropy_conditioning=True, domain_hidden=(8,)
    )
    batch = {
        "source": (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 0])),
        "target": torch.randn(6, 3, 16, 16),
    }
    with torch.autocast("cpu", dtype=dtype):
        loss = model.training_step(batch, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="conditioning"):
        CDAN(backbone=TinyBackbone(3), conditioning="bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="randomized_dim"):
        CDAN(backbone=TinyBackbone(3), randomized_dim=0)
    with pytest.raises(ValueError, match="multilinear_max_dim"):
        CDAN(backbone=TinyBackbone(3), multilinear_max_dim=-1)
    with pytest.raises(ValueError, match="adversarial=False"):
        CDAN(backbone=TinyBackbone(3), adversarial=False, conditioning=None, entropy_conditioning=True)
    with pytest.raises(ValueError, match="domain_loss_weight"):
        CDAN(backbone=TinyBackbone(3), domain_loss_weight=-1.0)
    with pytest.raises(ValueError, match="CDAN trains on"):
        CDAN(backbone=TinyBackbone(3), in_channels=3).training_step(
            (torch.randn(2, 3, 1, 1), torch.tensor([0, 1])), 0
        )
    with pytest.raises(ValueError, match="output_dim"):
        MultilinearMap(4, 2, output_dim=0)
    with pytest.raises(ValueError, match=r"R_f \(d, 4\)"):
        multilinear_map(torch.randn(2, 4), torch.randn(2, 3), (torch.randn(5, 3), torch.randn(5, 3)))
    with pytest.raises(ValueError, match="same B"):
        multilinear_map(torch.randn(2, 4), torch.randn(3, 3))


# ---- training runs: no target labels, exact resume ------------------------------------------------
def _cdan_e() -> CDAN:
    return CDAN(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), conditioning="randomized", randomized_dim=64,
        entropy_conditioning=True, domain_hidden=(16,), lr=0.05,
    )  # fmt: skip


def test_cdan_e_trains_without_target_labels_and_resumes_exactly(tmp_path: Path) -> None:
    assert_resumes_exactly(_cdan_e, tmp_path)
    checkpoint = torch.load(tmp_path / "step=3.ckpt", weights_only=True)
    assert "multilinear_map.random_features" in checkpoint["state_dict"]
    restored = CDAN.load_from_checkpoint(
        tmp_path / "step=3.ckpt", backbone=SmallConvNet(in_chans=3, channels=(4, 8)), weights_only=True
    )
    assert restored.multilinear_map.output_size == 64 and restored.hparams["entropy_conditioning"]  # type: ignore[index]
    torch.testing.assert_close(
        restored.multilinear_map.random_features, checkpoint["state_dict"]["multilinear_map.random_features"]
    )
