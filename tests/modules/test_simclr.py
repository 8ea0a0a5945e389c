"""SimCLR module: training contract, exact resume, optimizer choices, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from _ssl_fit import Recorder
from _ssl_fit import trainer as _trainer

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.modules import SimCLR


def _data(views: bool = True, on_device: bool | None = None, **kwargs: Any) -> DigitsDataModule:
    recipe = SimCLRViews(crop_scale=(0.4, 1.0), on_device=on_device) if views else None
    return DigitsDataModule(**{"batch_size": 32, "image_size": 8, "views": recipe, **kwargs})


def _model(**kwargs: Any) -> SimCLR:
    return SimCLR(
        **{
            "backbone": "resnet18",
            "in_channels": 1,
            "hidden_dim": 64,
            "output_dim": 32,
            "warmup_epochs": 1,
            "lr": 0.5,
            **kwargs,
        }
    )


def _batch_loss(model: SimCLR, views: list[torch.Tensor]) -> float:
    """NT-Xent of the model on fixed views (train-mode batch norm, as in training)."""
    model.train()
    with torch.no_grad():
        z = model.project(model.encode_views(views))  # (2B, D)
        return float(model.compute_loss(list(z.split(views[0].shape[0]))))


def test_training_step_contract_and_learning(tmp_path: Path) -> None:
    L.seed_everything(0)
    model, data = _model(optimizer="adamw", lr=2e-3, weight_decay=0.0), _data()  # Adam: visible in 20 steps
    data.setup("fit")
    views, labels = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    out = model.training_step((views, labels), 0)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["features"].shape == (32, model.backbone.num_features) and not out["features"].requires_grad
    assert torch.equal(out["labels"], labels)
    before = [p.detach().clone() for p in model.parameters()]
    loss_before = _batch_loss(model, views)
    recorder = Recorder()
    _trainer(tmp_path, [recorder], max_epochs=4, limit_train_batches=5).fit(model, data)
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    assert _batch_loss(model, views) < loss_before - 0.05  # the first batch's pairs are now easier to match
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True) if a.ndim > 1)


@pytest.mark.parametrize(
    ("stop_step", "on_device"),
    [(3, True), (4, True), (4, False)],  # at an epoch boundary and in the middle of epoch 2
)
def test_resume_reproduces_uninterrupted_losses(tmp_path: Path, stop_step: int, on_device: bool) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    full = Recorder()
    every = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=stop_step, save_top_k=-1)
    L.seed_everything(1)
    data = _data(on_device=on_device)
    assert data.device_views == on_device  # batched views made in on_after_batch_transfer, or per sample
    _trainer(tmp_path / "full", [full, every]).fit(_model(), data)
    assert len(full.losses) == 6

    resumed = Recorder()
    L.seed_everything(123)  # a different global seed must not matter: RNG state comes from the checkpoint
    _trainer(tmp_path / "b", [resumed], enable_checkpointing=False).fit(
        _model(), _data(on_device=on_device), ckpt_path=tmp_path / f"step={stop_step}.ckpt"
    )
    assert resumed.losses == full.losses[stop_step:]


def test_three_views_average_all_pairs() -> None:
    model = _model(gather_distributed=False)
    z = [torch.randn(4, 8) for _ in range(3)]
    from lightning_tl.losses import nt_xent_loss

    expected = (
        nt_xent_loss(z[0], z[1], 0.5) + nt_xent_loss(z[0], z[2], 0.5) + nt_xent_loss(z[1], z[2], 0.5)
    ) / 3
    torch.testing.assert_close(model.compute_loss(z), expected)


def test_optimizer_callable_and_param_groups(tmp_path: Path) -> None:
    from functools import partial

    model = _model(optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9))
    # a factory is code, not a setting: not in the saved (or logged) hyperparameters
    assert "optimizer" not in model.hparams and "optimizer" not in model.hparams_initial
    assert (
        model.hparams["weight_decay"] == 1e-6
        and model.hparams_initial["backbone"] == model.hparams["backbone"]
    )
    _trainer(tmp_path, [], max_epochs=1, limit_train_batches=1).fit(model, _data())
    optimizer = model.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    no_decay = optimizer.param_groups[1]
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])


def test_lr_scaling_from_global_batch(tmp_path: Path) -> None:
    model = _model(lr=None)
    _trainer(tmp_path, [], max_epochs=1, limit_train_batches=1).fit(model, _data())
    assert model.base_lr() == pytest.approx(0.075 * 32**0.5)


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        _model(temperature=0)
    with pytest.raises(ValueError, match="set lr for optimizer='adamw'"):
        _model(lr=None, optimizer="adamw")
    with pytest.raises(ValueError, match="batch_size=1"):
        _trainer(tmp_path, []).fit(_model(), _data(batch_size=1))
    with pytest.raises(ValueError, match=r"makes 0 .*views: \{class_path: lightning_tl.augment"):
        _trainer(tmp_path, []).fit(_model(), _data(views=False))
    with pytest.raises(ValueError, match="Give the datamodule a view recipe"):
        _model().training_step((torch.randn(4, 1, 8, 8), torch.zeros(4)), 0)


def test_warmup_counts_optimizer_steps_per_epoch(tmp_path: Path) -> None:
    # 3 batches an epoch, 2 epochs of warm-up, the run cut short by max_steps: warm-up is still 6 steps
    model = _model(warmup_epochs=2, lr=1.0)
    _trainer(tmp_path, [], max_epochs=10, max_steps=5, limit_train_batches=3).fit(model, _data())
    scheduler = model.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.lr_lambdas[0].warmup_steps == 6
    assert scheduler.get_last_lr()[0] == pytest.approx((5 + 1) / 6)  # still warming up at step 5


@pytest.mark.parametrize("on_device", [True, False])
def test_overfit_batches_with_either_view_path(tmp_path: Path, on_device: bool) -> None:
    # Lightning swaps our SeededSampler for a SequentialSampler: items are keyed by plain indices
    recorder = Recorder()
    trainer = _trainer(tmp_path, [recorder], max_epochs=2, limit_train_batches=None, overfit_batches=1)
    trainer.fit(_model(), _data(on_device=on_device))
    assert len(recorder.losses) == 2 and all(torch.isfinite(torch.tensor(recorder.losses)))
