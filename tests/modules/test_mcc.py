"""The MCC module: source CE + mu * mcc_loss(target), alone or with DANN / CDAN; resume; bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from _da_fit import X_S, X_T, Y_S, TinyBackbone, assert_resumes_exactly, fit_adaptation
from lightning.pytorch.callbacks import Callback

from lightning_tl.datamodules import DigitsDataModule, DomainAdaptationDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule
from lightning_tl.losses import mcc_loss
from lightning_tl.modules import DANN, MCC
from lightning_tl.modules.mcc import mcc_weight_factor
from lightning_tl.nn import SmallConvNet

# training_step called directly, without a Trainer, logs nothing (Lightning warns so)
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")

BATCH = {"source": (X_S, Y_S), "target": X_T}


def test_step_is_source_cross_entropy_plus_weighted_mcc_on_target() -> None:
    model = MCC(backbone=TinyBackbone(3), in_channels=3, num_classes=2, mcc_weight=0.7, temperature=1.5)
    assert not hasattr(model, "domain_classifier") and not hasattr(model, "grl")
    loss = model.training_step(BATCH, 0)
    loss.backward()
    w = model.backbone.linear.weight.detach().flatten().clone().requires_grad_()
    u = model.classifier.linear.weight.detach().clone().requires_grad_()
    c = model.classifier.linear.bias.detach().clone().requires_grad_()
    logits = (torch.cat([X_S, X_T]).flatten(1) @ w)[:, None] @ u.T + c  # (5, 2)
    expected = F.cross_entropy(logits[:2], Y_S) + 0.7 * mcc_loss(logits[2:], 1.5)
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(expected, (w, u, c))
    torch.testing.assert_close(model.backbone.linear.weight.grad.flatten(), grads[0])  # type: ignore[union-attr]
    torch.testing.assert_close(model.classifier.linear.weight.grad, grads[1])
    torch.testing.assert_close(model.classifier.linear.bias.grad, grads[2])


def test_with_dann_it_adds_mcc_to_the_dann_loss() -> None:
    batch = {
        "source": (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])),
        "target": torch.randn(5, 3, 16, 16),
    }
    losses = []
    for cls, kwargs in ((DANN, {}), (MCC, {"adversarial": True, "mcc_weight": 0.5})):
        torch.manual_seed(0)
        model = cls(backbone=SmallConvNet(in_chans=3, channels=(4, 8)), domain_hidden=(16,), **kwargs)
        model.grl.coeff.fill_(0.5)
        torch.manual_seed(1)  # dropout
        losses.append(model.training_step(batch, 0))
    target_logits = model(batch["target"])
    torch.testing.assert_close(losses[1], losses[0] + 0.5 * mcc_loss(target_logits, 2.5))


def test_with_cdan_e_it_builds_the_conditioned_discriminator() -> None:
    model = MCC(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), adversarial=True, conditioning="auto",
        entropy_conditioning=True, domain_hidden=(8,),
    )  # fmt: skip
    assert model.multilinear_map.output_size == 128 * 10  # 128 * 10 <= 4096: the full map
    assert model.domain_classifier.layers[0].in_features == 1280
    loss = model.training_step(
        {
            "source": (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 1, 0])),
            "target": torch.randn(6, 3, 16, 16),
        },
        0,
    )
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_step_under_autocast(dtype: torch.dtype) -> None:
    model = MCC(backbone=SmallConvNet(in_chans=3, channels=(4, 8)))
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
    for temperature in (0.0, -2.5, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            MCC(backbone=TinyBackbone(3), temperature=temperature)
    for weight in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="mcc_weight"):
            MCC(backbone=TinyBackbone(3), mcc_weight=weight)
    for fraction in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"mcc_warmup must be a fraction of the run in \[0, 1\], got"):
            MCC(backbone=TinyBackbone(3), mcc_warmup=fraction)
        with pytest.raises(ValueError, match=r"mcc_rampup must be a fraction of the run in \[0, 1\], got"):
            MCC(backbone=TinyBackbone(3), mcc_rampup=fraction)
    with pytest.raises(ValueError, match=r"mcc_warmup \+ mcc_rampup must be <= 1.*got 0.6 \+ 0.5"):
        MCC(backbone=TinyBackbone(3), mcc_warmup=0.6, mcc_rampup=0.5)
    with pytest.raises(ValueError, match="adversarial=False"):
        MCC(backbone=TinyBackbone(3), entropy_conditioning=True)
    with pytest.raises(ValueError, match="conditioning"):
        MCC(backbone=TinyBackbone(3), adversarial=True, conditioning="full")  # type: ignore[arg-type]
    model = MCC(backbone=TinyBackbone(3), in_channels=3, num_classes=2)
    with pytest.raises(ValueError, match="MCC trains on"):  # MCC alone still needs the target batch
        model.training_step((X_S, Y_S), 0)


def test_weight_factor_schedule() -> None:
    assert [mcc_weight_factor(p) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]  # the paper: no warm-up
    assert [mcc_weight_factor(p, warmup=0.5) for p in (0.0, 0.49, 0.5, 1.0)] == [0.0, 0.0, 1.0, 1.0]
    ramp = [mcc_weight_factor(p, rampup=0.5) for p in (0.0, 0.25, 0.5, 0.75)]
    assert ramp == pytest.approx([0.0, 0.5, 1.0, 1.0])
    ramp = [mcc_weight_factor(p, warmup=0.25, rampup=0.5) for p in (0.2, 0.25, 0.5, 0.75, 1.0)]
    assert ramp == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


class RecordMCC(Callback):
    """(cross-entropy, mcc loss, weight factor) of every training batch, from the logged metrics."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        metrics = trainer.callback_metrics
        cls_loss, mcc = float(metrics["train_cls_loss"]), float(metrics["train_mcc_loss"])
        weight = float(metrics["train_mcc_weight"])
        assert float(outputs["loss"]) == pytest.approx(cls_loss + weight * mcc, rel=1e-6)
        self.rows.append((cls_loss, mcc, weight))


def test_warm_start_is_source_only_then_ramps_to_the_weight() -> None:
    """6 steps, warm-up 1/3, ramp 1/3: factor 0 at p = 0, 1/6, 1/3, then 0.5, 1, 1 (weight 0.8)."""
    record = RecordMCC()
    L.seed_everything(3, verbose=False)
    data = DomainAdaptationDataModule(
        DigitsDataModule(rgb=True, batch_size=32, seed=1),
        DigitsMDataModule(batch_size=32, seed=1, train_subset=200),
    )
    model = MCC(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), mcc_weight=0.8, mcc_warmup=1 / 3,
        mcc_rampup=1 / 3, lr=0.05,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, limit_val_batches=0, callbacks=[record], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    assert [w for *_, w in record.rows] == pytest.approx([0.0, 0.0, 0.0, 0.4, 0.8, 0.8])
    assert all(0 < mcc < 1 for _, mcc, _ in record.rows)  # computed and logged during the warm-up too


def test_warm_start_steps_are_those_of_source_only(tmp_path: Path) -> None:
    """While the weight is 0 the MCC run is the source-only run: same losses, step by step."""

    def make(cls: type, **kwargs: Any) -> Callable[[], Any]:
        return lambda: cls(backbone=SmallConvNet(in_chans=3, channels=(4, 8)), lr=0.05, **kwargs)

    source_only = fit_adaptation(make(DANN, adversarial=False), tmp_path)
    warm = fit_adaptation(make(MCC, mcc_warmup=0.5), tmp_path)
    plain = fit_adaptation(make(MCC), tmp_path)
    torch.testing.assert_close([loss for *_, loss in warm[:3]], [loss for *_, loss in source_only[:3]])
    assert warm[3][-1] != pytest.approx(source_only[3][-1])  # MCC has started
    assert plain[1][-1] != pytest.approx(source_only[1][-1])  # without warm-up it acts from the first step


def _mcc_alone() -> MCC:
    return MCC(backbone=SmallConvNet(in_chans=3, channels=(4, 8)), lr=0.05)


def _mcc_cdan_e() -> MCC:
    return MCC(
        backbone=SmallConvNet(in_chans=3, channels=(4, 8)), adversarial=True, conditioning="randomized",
        randomized_dim=32, entropy_conditioning=True, domain_hidden=(16,), lr=0.05,
    )  # fmt: skip


def _mcc_warm_start() -> MCC:
    return MCC(backbone=SmallConvNet(in_chans=3, channels=(4, 8)), mcc_warmup=0.25, mcc_rampup=0.5, lr=0.05)


@pytest.mark.parametrize(
    "make", [_mcc_alone, _mcc_cdan_e, _mcc_warm_start], ids=["mcc", "mcc_cdan_e", "mcc_warm_start"]
)
def test_trains_without_target_labels_and_resumes_exactly(make: Callable[[], MCC], tmp_path: Path) -> None:
    assert_resumes_exactly(make, tmp_path)
    restored = MCC.load_from_checkpoint(
        tmp_path / "step=3.ckpt", backbone=SmallConvNet(in_chans=3, channels=(4, 8)), weights_only=True
    )
    reference = make()
    assert restored.hparams == reference.hparams and restored.uses_target
    assert hasattr(restored, "multilinear_map") == hasattr(reference, "multilinear_map")
