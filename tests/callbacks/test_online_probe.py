"""OnlineLinearProbe: learns on frozen features, never touches the module, resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _standins import DigitsStandIn, EncoderStandIn, trainer_kwargs
from lightning.pytorch import Trainer
from torch import Tensor

from lightning_tl.callbacks import OnlineLinearProbe


def _fit(
    probe: OnlineLinearProbe, epochs: int, model: EncoderStandIn | None = None, **kwargs: Any
) -> Trainer:
    trainer = Trainer(**trainer_kwargs(max_epochs=epochs, callbacks=[probe], **kwargs))
    trainer.fit(model or EncoderStandIn(), datamodule=DigitsStandIn(unlabelled_every=3))
    return trainer


def test_probe_learns_on_frozen_features() -> None:
    model, probe = EncoderStandIn(lr=0.0), OnlineLinearProbe(lr=1.0)  # small features (std 0.26)
    trainer = _fit(probe, epochs=3, model=model, log_every_n_steps=1)
    assert probe.probe is not None and probe.probe.weight.shape == (10, 32)  # num_classes from the datamodule
    metrics = trainer.callback_metrics
    assert metrics["probe_val_acc"] > 0.8  # chance is 0.1
    assert metrics["probe_val_top5"] >= metrics["probe_val_acc"]
    assert {"probe_train_loss", "probe_train_acc"} <= set(metrics)

    # the logged accuracy is the probe's accuracy on the whole val split
    x, y = DigitsStandIn().splits["val"].tensors
    with torch.no_grad():
        pred = probe.probe(model.encode(x)).argmax(dim=1)
    assert metrics["probe_val_acc"].item() == pytest.approx((pred == y).sum().item() / len(y), abs=1e-6)


def test_probe_leaves_the_module_and_its_training_untouched() -> None:
    def run(callbacks: list) -> tuple[EncoderStandIn, Trainer]:
        model = EncoderStandIn(lr=0.1, dropout=0.3)  # dropout: any extra global random draw would show
        trainer = Trainer(**trainer_kwargs(max_epochs=2, limit_train_batches=4, callbacks=callbacks))
        trainer.fit(model, datamodule=DigitsStandIn(unlabelled_every=3))
        return model, trainer

    plain, _ = run([])
    probe = OnlineLinearProbe()
    probed, trainer = run([probe])
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), probed.parameters(), strict=True))
    assert probe.probe is not None
    probe_params = {id(p) for p in probe.probe.parameters()}
    assert not probe_params & {id(p) for p in probed.parameters()}
    assert not probe_params & {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}


def _probe_state(probe: OnlineLinearProbe) -> tuple[dict[str, Tensor], dict[str, Any]]:
    assert probe.probe is not None and probe.optimizer is not None
    return probe.probe.state_dict(), probe.optimizer.state_dict()


def _assert_same_state(a: OnlineLinearProbe, b: OnlineLinearProbe) -> None:
    (weights_a, optim_a), (weights_b, optim_b) = _probe_state(a), _probe_state(b)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert optim_a["param_groups"] == optim_b["param_groups"]
    for i, state in optim_a["state"].items():
        assert state.keys() == optim_b["state"][i].keys()
        assert all(
            torch.equal(torch.as_tensor(v), torch.as_tensor(optim_b["state"][i][k])) for k, v in state.items()
        )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_state_dict_round_trip_restores_weights_and_optimizer(optimizer: str) -> None:
    probe = OnlineLinearProbe(optimizer=optimizer, lr=0.01)
    _fit(probe, epochs=1, limit_train_batches=3, limit_val_batches=0)
    state = probe.state_dict()
    restored = OnlineLinearProbe(optimizer=optimizer, lr=0.01)
    restored.load_state_dict(state)
    restored._ready(32, torch.device("cpu"))  # what the first batch after resuming does
    _assert_same_state(probe, restored)
    assert state["probe"]["weight"].data_ptr() != probe.probe.weight.data_ptr()  # a snapshot, not a view

    # restored weights serve validation straight away (under inference mode) and can still train
    evaluator = OnlineLinearProbe(optimizer=optimizer, lr=0.01)
    evaluator.load_state_dict(state)
    trainer = Trainer(**trainer_kwargs(max_epochs=1, limit_train_batches=1, callbacks=[evaluator]))
    (metrics,) = trainer.validate(EncoderStandIn(), datamodule=DigitsStandIn(), verbose=False)
    assert 0.0 < metrics["probe_val_acc"] <= 1.0
    trainer.fit(EncoderStandIn(), datamodule=DigitsStandIn())
    assert not torch.equal(evaluator.probe.weight, state["probe"]["weight"])

    with pytest.raises(ValueError, match="num_classes=7 but the checkpoint's probe has 10"):
        OnlineLinearProbe(num_classes=7).load_state_dict(state)
    assert OnlineLinearProbe().state_dict() == {}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_from_checkpoint_is_exact(tmp_path: Path, optimizer: str) -> None:
    kwargs: dict[str, Any] = {"limit_train_batches": 6, "limit_val_batches": 2}
    uninterrupted = OnlineLinearProbe(optimizer=optimizer, lr=0.02)
    _fit(uninterrupted, epochs=2, **kwargs)

    first = OnlineLinearProbe(optimizer=optimizer, lr=0.02)
    trainer = _fit(first, epochs=1, **kwargs)
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    resumed = OnlineLinearProbe(optimizer=optimizer, lr=0.02)
    trainer = Trainer(**trainer_kwargs(max_epochs=2, callbacks=[resumed], **kwargs))
    trainer.fit(
        EncoderStandIn(), datamodule=DigitsStandIn(unlabelled_every=3), ckpt_path=tmp_path / "epoch1.ckpt"
    )
    _assert_same_state(uninterrupted, resumed)


def test_all_unlabelled_batches_leave_the_probe_unchanged() -> None:
    probe = OnlineLinearProbe(num_classes=10, feature_dim=32)  # built in setup, at zeros
    trainer = Trainer(
        **trainer_kwargs(max_epochs=1, limit_train_batches=2, limit_val_batches=0, callbacks=[probe])
    )
    trainer.fit(EncoderStandIn(), datamodule=DigitsStandIn(unlabelled_every=1))
    assert probe.probe is not None and not probe.probe.weight.any()


def test_errors_explain_the_contract() -> None:
    class LossOnly(EncoderStandIn):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            return super().training_step(batch, batch_idx)["loss"]

    with pytest.raises(ValueError, match="`training_step` to return a dict with 'features'"):
        _fit(OnlineLinearProbe(), epochs=1, model=LossOnly())

    with pytest.raises(ValueError, match="pass `num_classes=`"):
        dm = DigitsStandIn()
        Trainer(**trainer_kwargs(max_epochs=1, callbacks=[OnlineLinearProbe()])).fit(
            EncoderStandIn(), dm.train_dataloader(), dm.val_dataloader()
        )

    unlabelled = DigitsStandIn()
    unlabelled.num_classes = 0  # what an unlabelled image folder reports: the probe would learn nothing
    with pytest.raises(ValueError, match=r"labelled data with >= 2 classes.*num_classes=0"):
        Trainer(**trainer_kwargs(max_epochs=1, callbacks=[OnlineLinearProbe()])).fit(
            EncoderStandIn(), datamodule=unlabelled
        )

    with pytest.raises(ValueError, match="label 9 but num_classes=5"):
        _fit(OnlineLinearProbe(num_classes=5), epochs=1)

    with pytest.raises(ValueError, match="size 16, got 32"):
        _fit(OnlineLinearProbe(feature_dim=16), epochs=1)

    for kwargs, match in [
        ({"num_classes": 1}, "num_classes=1"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"optimizer": "lbfgs"}, "'lbfgs'"),
        ({"momentum": 1.0}, "momentum=1.0"),
        ({"weight_decay": -1.0}, "weight_decay=-1.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            OnlineLinearProbe(**kwargs)


def test_validate_before_training_warns() -> None:
    trainer = Trainer(**trainer_kwargs(callbacks=[OnlineLinearProbe()]))
    with pytest.warns(UserWarning, match="has not trained yet"):
        trainer.validate(EncoderStandIn(), datamodule=DigitsStandIn(), verbose=False)
