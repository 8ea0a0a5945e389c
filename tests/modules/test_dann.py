"""The DANN module: reversed gradients reach the backbone only, schedules, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _da_fit import TinyBackbone, assert_resumes_exactly
from torch import nn

from lightning_tl.modules import DANN
from lightning_tl.modules._dann_parts import dann_lr_factor
from lightning_tl.nn import SmallConvNet, dann_coeff

# training_step called directly, without a Trainer, logs nothing (Lightning warns so)
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")


def _tiny_dann(coeff: float) -> DANN:
    model = DANN(backbone=TinyBackbone(3), in_channels=3, num_classes=2, domain_hidden=(), domain_dropout=0.0)
    with torch.no_grad():
        model.backbone.linear.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))  # w
        model.classifier.linear.weight.copy_(torch.tensor([[1.5], [-0.5]]))  # u (2, 1)
        model.classifier.linear.bias.copy_(torch.tensor([0.1, -0.2]))
        model.domain_classifier.layers[0].weight.fill_(0.8)  # a
        model.domain_classifier.layers[0].bias.fill_(-0.3)  # b
    model.grl.coeff.fill_(coeff)
    return model


def test_discriminator_gets_plain_gradient_backbone_gets_reversed_one() -> None:
    coeff = 0.6
    model = _tiny_dann(coeff)
    x_s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]]).view(2, 3, 1, 1)
    y_s = torch.tensor([0, 1])
    x_t = torch.tensor([[2.0, 0.0, -1.0], [1.0, 1.0, 1.0], [-0.5, 0.5, 0.0]]).view(3, 3, 1, 1)
    loss = model.training_step({"source": (x_s, y_s), "target": x_t}, 0)
    loss.backward()

    # by hand: f_i = w . x_i; class logits u f_i + c; domain logit z_i = a f_i + b, t_i = 0 (source) / 1
    w, a, b = torch.tensor([0.5, -1.0, 2.0]), 0.8, -0.3
    u, c = torch.tensor([1.5, -0.5]), torch.tensor([0.1, -0.2])
    xs, xt = x_s.flatten(1), x_t.flatten(1)
    x_all = torch.cat([xs, xt])  # (5, 3)
    f = x_all @ w  # (5,)
    t = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    dz = (torch.sigmoid(a * f + b) - t) / 5  # d(mean BCE)/dz_i
    grad_a, grad_b = (dz * f).sum(), dz.sum()
    probs = torch.softmax(f[:2, None] * u + c, dim=1)  # (2, 2)
    dlogits = (probs - F.one_hot(y_s, 2)) / 2  # d(mean CE)/dlogits
    grad_u = (dlogits * f[:2, None]).sum(0)
    grad_w_cls = ((dlogits @ u)[:, None] * xs).sum(0)  # plain gradient of the label loss
    grad_w_dom = ((dz * a)[:, None] * x_all).sum(0)  # plain gradient of the domain loss

    dom = model.domain_classifier.layers[0]
    torch.testing.assert_close(dom.weight.grad.flatten(), grad_a.view(1))  # type: ignore[union-attr]
    torch.testing.assert_close(dom.bias.grad, grad_b.view(1))
    torch.testing.assert_close(model.classifier.linear.weight.grad.flatten(), grad_u)  # type: ignore[union-attr]
    torch.testing.assert_close(
        model.backbone.linear.weight.grad.flatten(),  # type: ignore[union-attr]
        grad_w_cls - coeff * grad_w_dom,
    )
    torch.testing.assert_close(
        loss, F.cross_entropy(f[:2, None] * u + c, y_s) + F.binary_cross_entropy_with_logits(a * f + b, t)
    )


def test_source_only_has_no_domain_branch_and_ignores_target() -> None:
    torch.manual_seed(0)
    adv = DANN(backbone=TinyBackbone(3), in_channels=3, num_classes=2)
    torch.manual_seed(0)
    plain = DANN(backbone=TinyBackbone(3), in_channels=3, num_classes=2, adversarial=False)
    assert not hasattr(plain, "domain_classifier") and not hasattr(plain, "grl")
    x, y = torch.randn(4, 3, 1, 1), torch.tensor([0, 1, 1, 0])
    a = plain.training_step({"source": (x, y), "target": torch.randn(5, 3, 1, 1)}, 0)
    b = plain.training_step((x, y), 0)  # plain batches are accepted without adversarial training
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="DomainAdaptationDataModule"):
        adv.training_step((x, y), 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_step_under_autocast(dtype: torch.dtype) -> None:
    model = _tiny_dann(0.5)
    batch = {
        "source": (torch.randn(4, 3, 1, 1), torch.tensor([0, 1, 1, 0])),
        "target": torch.randn(6, 3, 1, 1),
    }
    with torch.autocast("cpu", dtype=dtype):
        loss = model.training_step(batch, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="gamma"):
        DANN(backbone=TinyBackbone(3), gamma=0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        DANN(backbone=TinyBackbone(3), lr_schedule="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_chans: 1"):
        DANN(backbone=SmallConvNet(in_chans=3), in_channels=1)
    with pytest.raises(ValueError, match="num_features"):
        DANN(backbone=nn.Conv2d(3, 4, 3))
    model = DANN(backbone=TinyBackbone(3), in_channels=3)
    with pytest.raises(ValueError, match="image_size"):
        model.training_step(
            {"source": (torch.randn(2, 3, 1, 1), torch.tensor([0, 1])), "target": torch.randn(2, 1, 1, 1)}, 0
        )


def test_lr_factor_follows_the_paper() -> None:
    assert dann_lr_factor(0, 100) == 1.0
    assert dann_lr_factor(50, 100) == pytest.approx(6**-0.75)
    assert dann_lr_factor(100, 100) == pytest.approx(11**-0.75)


TOTAL = 8


def _dann() -> DANN:
    return DANN(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), domain_hidden=(16,), domain_dropout=0.5,
        backbone_lr_mult=0.1, lr=0.05,
    )  # fmt: skip


@pytest.mark.parametrize("accumulate", [1, 2])
def test_coefficient_and_lr_follow_true_progress_and_resume_exactly(tmp_path: Path, accumulate: int) -> None:
    # 1,257 source images: 20 batches per epoch; the resumed run continues every row exactly
    fit = {"total": TOTAL, "accumulate": accumulate, "batch_size": 64, "target_images": 500}
    full = assert_resumes_exactly(_dann, tmp_path, **fit)
    for i, (step, coeff, lrs, _) in enumerate(full):
        assert step == i // accumulate  # global_step counts optimizer steps
        assert coeff == pytest.approx(dann_coeff(step / TOTAL))  # same on every micro-batch
        assert lrs[-1] == pytest.approx(0.05 * dann_lr_factor(step, TOTAL))  # heads at lr
        assert lrs[0] == pytest.approx(0.005 * dann_lr_factor(step, TOTAL))  # backbone at lr * 0.1
