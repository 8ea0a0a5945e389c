"""AdapterResNet: frozen backbone under a Trainer, multi-domain batches, exact resume, pretrained file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tl.backbones import create_backbone
from lightning_tl.datamodules import DigitsDataModule, MultiDomainDataModule
from lightning_tl.modules import AdapterResNet

TINY = {"channels": [8, 16, 16, 16], "layers": [1, 1, 1, 1]}


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *a: Any
    ) -> None:
        self.losses.append(outputs["loss"].item())


def _data() -> MultiDomainDataModule:
    # Domain "b" has 2 batches per epoch and starts over inside each 3-batch epoch.
    return MultiDomainDataModule(
        {
            "a": DigitsDataModule(image_size=8, batch_size=32, seed=0),
            "b": DigitsDataModule(image_size=8, batch_size=32, seed=1, train_subset=64),
        }
    )


def _model(**kwargs: Any) -> AdapterResNet:
    args = {
        "backbone": "timm/resnet18",
        "backbone_kwargs": TINY,
        "in_channels": 1,
        "num_classes": {"a": 10, "b": 10},
    }
    with pytest.warns(UserWarning, match="randomly initialised"):
        return AdapterResNet(**{**args, **kwargs})


def _trainer(tmp_path: Path, callbacks: list[L.Callback], **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        **{
            "accelerator": "cpu",
            "max_epochs": 2,
            "limit_train_batches": 3,
            "limit_val_batches": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": tmp_path,
            "callbacks": callbacks,
            **kwargs,
        }
    )


@pytest.mark.parametrize("kind", ["parallel", "series"])
def test_only_domain_parameters_change(tmp_path: Path, kind: str) -> None:
    model = _model(kind=kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _trainer(tmp_path, [], max_epochs=1, enable_checkpointing=False).fit(model, _data())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all("domain_modules" in k for k in changed)  # frozen weights bit-identical
    assert any(".a." in k for k in changed) and any(".b." in k for k in changed)
    assert any("adapter" not in k and "fc." in k for k in changed)  # heads train
    assert 0 < model.trainable_share("a") < model.trainable_share() < 1


def test_alternate_takes_one_step_per_domain(tmp_path: Path) -> None:
    model = _model(domain_batches="alternate")
    _trainer(tmp_path, [], max_epochs=1, limit_train_batches=2, enable_checkpointing=False).fit(
        model, _data()
    )
    assert model.global_step == 4


def test_validation_per_domain(tmp_path: Path) -> None:
    model = _model()
    trainer = _trainer(tmp_path, [], max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, _data())
    assert {"val_acc/a", "val_acc/b", "val_loss/a", "val_loss/b"} <= set(trainer.callback_metrics)
    share = trainer.callback_metrics["trainable_params_share"]
    assert float(share) == pytest.approx(model.trainable_share()) and 0 < float(share) < 1


@pytest.mark.parametrize("domain_batches", ["mix", "alternate"])
def test_resume_reproduces_uninterrupted_run(tmp_path: Path, domain_batches: str) -> None:
    full = LossRecorder()
    every = ModelCheckpoint(dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1)
    L.seed_everything(1)
    _trainer(tmp_path / "full", [full, every]).fit(_model(domain_batches=domain_batches), _data())
    assert len(full.losses) == 6
    # step=2: after 2 batches (mix), or after 1 batch of 2 domain steps (alternate); mid-epoch either way
    done = 2 if domain_batches == "mix" else 1
    resumed = LossRecorder()
    L.seed_everything(123)  # the RNG states come from the checkpoint
    final = _model(domain_batches=domain_batches)
    _trainer(tmp_path / "b", [resumed], enable_checkpointing=False).fit(
        final, _data(), ckpt_path=tmp_path / "step=2.ckpt"
    )
    assert resumed.losses == full.losses[done:]


def test_pretrained_file_and_bad_input(tmp_path: Path) -> None:
    backbone = create_backbone("timm/resnet18", small_input=True, in_chans=1, model_kwargs=TINY)
    torch.save(backbone.state_dict(), tmp_path / "w.pt")
    model = AdapterResNet(
        "timm/resnet18", pretrained=str(tmp_path / "w.pt"), in_channels=1, backbone_kwargs=TINY
    )
    conv = model.backbone.model.layer1[0].conv1.conv
    assert torch.equal(conv.weight, backbone.model.layer1[0].conv1.weight)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model.merged_backbone().eval()(x), model.eval()(x))  # default domain
    with pytest.raises(ValueError, match="domain_batches"):
        AdapterResNet(domain_batches="round_robin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="do not match"):
        AdapterResNet(num_classes={"a": 2}, domains=["b"])
    with pytest.raises(ValueError, match=r"Unknown optimizer 'sgdd'; timm knows: .*sgd"):
        AdapterResNet(optimizer="sgdd")
    with pytest.raises(ValueError, match="unknown domain 'c'"):
        model(torch.zeros(1, 1, 8, 8), "c")
