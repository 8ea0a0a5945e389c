"""MoCo module: training contract, key encoder, queue, exact resume, clear errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from _ssl_fit import Recorder
from _ssl_fit import trainer as _trainer
from torch import nn

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import DigitsDataModule
from lightning_tl.losses import info_nce_loss
from lightning_tl.modules import MoCo

#: What the resume test compares after every step: the queue, its pointer and the key encoder.
KEPT = ("queue.", "key_backbone.", "key_head.")


def _data(views: bool = True, on_device: bool | None = None, **kwargs: Any) -> DigitsDataModule:
    recipe = SimCLRViews(crop_scale=(0.4, 1.0), on_device=on_device) if views else None
    return DigitsDataModule(**{"batch_size": 16, "image_size": 8, "views": recipe, **kwargs})


def _model(**kwargs: Any) -> MoCo:
    return MoCo(
        **{
            "backbone": "resnet18",
            "in_channels": 1,
            "hidden_dim": 64,
            "output_dim": 32,
            "queue_size": 40,  # not a multiple of the batch (16): writes wrap mid-batch
            "key_momentum": 0.9,
            "lr": 0.05,
            **kwargs,
        }
    )


def _batch(n: int = 8, size: int = 8) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(n)
    return [torch.randn(n, 1, size, size, generator=gen) for _ in range(2)], torch.arange(n) % 10


def test_training_step_contract_key_encoder_and_queue() -> None:
    torch.manual_seed(0)
    model = _model()
    views, labels = _batch(8)
    queue_before = model.queue.keys.clone()
    key_before = {k: v.clone() for k, v in model.key_backbone.state_dict().items()}
    online = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    out = model.training_step((views, labels), 0)
    assert out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["features"].shape == (8, model.backbone.num_features) and not out["features"].requires_grad
    assert torch.equal(out["labels"], labels)
    # the loss is InfoNCE of the view-1 queries against the keys of view 2 and the queue *before* enqueueing
    with torch.no_grad():
        q = model.project(model.encode(views[0]))
        k = model.encode_keys(views[1], seed=0)
    torch.testing.assert_close(out["loss"], info_nce_loss(q, k, queue_before, 0.2))
    torch.testing.assert_close(k.norm(dim=1), torch.ones(8))
    assert int(model.queue.pointer) == 8 and torch.equal(model.queue.keys[:8], k)
    assert torch.equal(model.queue.keys[8:], queue_before[8:])
    # key encoder = 0.9 * (copy of the online encoder) + 0.1 * online: unchanged at step 0 ...
    for name, value in model.key_backbone.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * key_before[name] + 0.1 * online[name], msg=name)
    # ... and it never receives a gradient; everything on the query side does
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.key_backbone.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.key_head.parameters())
    assert all(
        p.grad is not None for p in [*model.backbone.parameters(), *model.projection_head.parameters()]
    )


def test_key_encoder_is_momentum_copy_of_backbone_and_head(tmp_path: Path) -> None:
    model = _model(key_momentum=0.8)

    class Check(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
            self.before = [
                {k: v.clone() for k, v in net.state_dict().items()}
                for net in (model.backbone, model.projection_head, model.key_backbone, model.key_head)
            ]

        def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: Any) -> None:
            online_b, online_h, key_b, key_h = self.before
            for key_net, old, src in (
                (model.key_backbone, key_b, online_b),
                (model.key_head, key_h, online_h),
            ):
                for name, value in key_net.state_dict().items():
                    if value.is_floating_point():
                        torch.testing.assert_close(value, 0.8 * old[name] + 0.2 * src[name], msg=name)
            self.checked = getattr(self, "checked", 0) + 1

    check = Check()
    _trainer(tmp_path, [check], max_epochs=1, limit_train_batches=2).fit(model, _data())
    assert check.checked == 2
    # the key encoder's own forward leaves its running statistics alone (BN momentum 0)
    assert all(m.momentum == 0.0 for m in model.key_backbone.modules() if isinstance(m, nn.BatchNorm2d))


# at an epoch boundary; in the middle of epoch 2 with the symmetric loss and the cosine momentum schedule
@pytest.mark.parametrize(("stop_step", "symmetric"), [(3, False), (4, True)])
def test_resume_reproduces_queue_key_encoder_and_losses(
    tmp_path: Path, stop_step: int, symmetric: bool
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    schedule = {"key_momentum_schedule": "cosine", "key_momentum": 0.9} if symmetric else {}
    full = Recorder(keep=KEPT)
    every = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=stop_step, save_top_k=-1)
    L.seed_everything(1)
    _trainer(tmp_path / "full", [full, every]).fit(_model(symmetric=symmetric, **schedule), _data())
    assert len(full.losses) == 6 and all(math.isfinite(x) for x in full.losses)

    resumed = Recorder(keep=KEPT)
    L.seed_everything(123)  # a different global seed must not matter: RNG state comes from the checkpoint
    model = _model(symmetric=symmetric, **schedule)
    _trainer(tmp_path / "b", [resumed], enable_checkpointing=False).fit(
        model, _data(), ckpt_path=tmp_path / f"step={stop_step}.ckpt"
    )
    assert resumed.losses == full.losses[stop_step:]
    for got, want in zip(resumed.states, full.states[stop_step:], strict=True):
        assert got.keys() == want.keys() and "queue.keys" in got and "queue.pointer" in got
        for name in want:
            assert torch.equal(got[name], want[name]), name


def test_smaller_last_batch_and_wrapping_queue(tmp_path: Path) -> None:
    # a user's loader that keeps the last incomplete batch: 20 images in batches of 8 -> 8, 8, 4
    images = torch.randn(20, 1, 8, 8)
    dataset = torch.utils.data.TensorDataset(images, images.flip(-1), torch.arange(20) % 10)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        collate_fn=lambda rows: (
            [torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])],
            torch.tensor([int(r[2]) for r in rows]),
        ),
    )
    model = _model(queue_size=12)
    _trainer(tmp_path, [], max_epochs=1, limit_train_batches=None).fit(model, train_dataloaders=loader)
    assert model.global_step == 3
    assert int(model.queue.pointer) == 20 % 12 and int(model.queue.count) == 12


def test_works_with_knn_monitor_and_online_probe(tmp_path: Path) -> None:
    from lightning_tl.callbacks import KNNMonitor, OnlineLinearProbe

    knn, probe = KNNMonitor(k=5, max_bank_size=200), OnlineLinearProbe(optimizer="adam", lr=0.01)
    trainer = _trainer(tmp_path, [knn, probe], max_epochs=1, limit_train_batches=2, limit_val_batches=2)
    trainer.fit(_model(), _data())
    assert [epoch for epoch, _ in knn.history] == [-1, 0]  # before training and after the epoch
    assert all(0 <= acc <= 1 for _, acc in knn.history)
    assert {"probe_train_acc", "probe_val_acc"} <= set(trainer.callback_metrics)


def test_sync_batchnorm_option_converts_and_rejects_cpu_ddp(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(sync_batchnorm=True, shuffle_bn=False)
    for net in (model.backbone, model.key_backbone):
        assert any(isinstance(m, nn.SyncBatchNorm) for m in net.modules())
        assert not any(type(m) is nn.BatchNorm2d for m in net.modules())
    # one process: SyncBatchNorm falls back to plain batch norm, so the step runs on CPU
    out = model.training_step(_batch(8), 0)
    assert torch.isfinite(out["loss"])
    # under DDP on CPU it would fail inside torch at the first step: refused at setup instead
    from lightning_tl import distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    with pytest.raises(ValueError, match=r"sync_batchnorm=True needs GPUs.*shuffle_bn: true"):
        model.setup("fit")


def test_bad_inputs_have_clear_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"queue_size must be >= 1, got 0.*global batch size"):
        _model(queue_size=0)
    with pytest.raises(ValueError, match=r"queue_size must be >= 1, got -5"):
        _model(queue_size=-5)
    with pytest.raises(ValueError, match=r"key_momentum must be in \[0, 1\], got 1.01"):
        _model(key_momentum=1.01)
    with pytest.raises(ValueError, match=r"key_momentum must be in \[0, 1\], got -0.5"):
        _model(key_momentum=-0.5)
    with pytest.raises(ValueError, match=r"final_key_momentum must be in \[0, 1\], got 2"):
        _model(final_key_momentum=2)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        _model(temperature=0)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -0\.2"):
        _model(temperature=-0.2)
    with pytest.raises(ValueError, match="set shuffle_bn: false"):
        _model(sync_batchnorm=True)
    with pytest.raises(
        ValueError, match=r"queue_size=40 is smaller than the global batch 64.*queue_size >= 64"
    ):
        _trainer(tmp_path, []).fit(_model(), _data(batch_size=64))
    with pytest.raises(ValueError, match=r"makes 0 .*views: \{class_path: lightning_tl.augment"):
        _trainer(tmp_path, []).fit(_model(), _data(views=False))
    with pytest.raises(ValueError, match="Give the datamodule a view recipe"):
        _model().training_step((torch.randn(4, 1, 8, 8), torch.zeros(4)), 0)
    with pytest.raises(ValueError, match="exactly 2 views"):
        _model().training_step(([torch.randn(4, 1, 8, 8)] * 3, torch.zeros(4)), 0)
