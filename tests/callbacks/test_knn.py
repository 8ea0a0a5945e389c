"""knn_predict against a loop transcription of InstDisc's weighted vote; KNNMonitor in a real Trainer."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from _standins import DigitsStandIn, EncoderStandIn, trainer_kwargs
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Subset

from lightning_tl.callbacks import KNNMonitor, knn_predict


def _reference_knn(
    query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int, t: float
) -> list[int]:
    """Wu et al. 2018, Sec. 3.4, one query at a time: top-k cosine neighbours vote exp(s / t)."""
    preds = []
    for q in query.double().tolist():
        qn = math.sqrt(sum(v * v for v in q))
        sims = []
        for b in bank.double().tolist():
            bn = math.sqrt(sum(v * v for v in b))
            sims.append(sum(u * v for u, v in zip(q, b, strict=True)) / (qn * bn))
        neighbours = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in neighbours:
            votes[int(labels[i])] += math.exp(sims[i] / t)
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return preds


@pytest.mark.parametrize("k", [1, 3, 10, 40])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 2.0])
@pytest.mark.parametrize(("n_query", "n_bank", "dim", "num_classes"), [(7, 40, 5, 3), (12, 60, 16, 6)])
def test_knn_predict_matches_loop_reference(
    k: int, temperature: float, n_query: int, n_bank: int, dim: int, num_classes: int
) -> None:
    gen = torch.Generator().manual_seed(k * 100 + n_bank)
    query, bank = torch.randn(n_query, dim, generator=gen), torch.randn(n_bank, dim, generator=gen) * 3
    labels = torch.randint(num_classes, (n_bank,), generator=gen)
    pred = knn_predict(query, bank, labels, num_classes, k=k, temperature=temperature)
    assert pred.dtype == torch.long and pred.shape == (n_query,)
    assert pred.tolist() == _reference_knn(query, bank, labels, num_classes, k, temperature)


def test_knn_predict_degenerate_cases() -> None:
    gen = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(50, 8, generator=gen), torch.randint(5, (50,), generator=gen)
    # the queries are bank items: their own nearest neighbour (similarity 1) gives their label
    assert torch.equal(knn_predict(bank[10:20] * 7, bank, labels, 5, k=1, temperature=0.1), labels[10:20])
    # a tiny temperature does not overflow and reduces to 1-NN
    one_nn = knn_predict(bank[:5] + 0.1, bank, labels, 5, k=1)
    assert torch.equal(knn_predict(bank[:5] + 0.1, bank, labels, 5, k=30, temperature=1e-4), one_nn)
    # k = N with a huge temperature: a plain majority vote
    majority = torch.bincount(labels, minlength=5).argmax()
    assert (knn_predict(bank[:4], bank, labels, 5, k=50, temperature=1e6) == majority).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k=0"),
        ({"k": 51}, "k=51"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_classes": 0}, "0"),
    ],
)
def test_knn_predict_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    bank, labels = torch.randn(50, 8), torch.zeros(50, dtype=torch.long)
    args = {"num_classes": 2, "k": 5, "temperature": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        knn_predict(torch.randn(3, 8), bank, labels, **args)
    with pytest.raises(ValueError, match="same D"):
        knn_predict(torch.randn(3, 4), bank, labels, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k=0"),
        ({"temperature": -1.0}, "temperature=-1.0"),
        ({"every_n_epochs": 0}, "every_n_epochs=0"),
        ({"k": 20, "max_bank_size": 10}, "max_bank_size=10"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_monitor_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KNNMonitor(**kwargs)


def _direct_accuracy(model: EncoderStandIn, dm: DigitsStandIn, k: int, temperature: float) -> float:
    model.eval()
    with torch.no_grad():
        bx, by = dm.splits["train"].tensors
        ex, ey = dm.splits["val"].tensors
        pred = knn_predict(model.encode(ex), model.encode(bx), by, 10, k=k, temperature=temperature)
    return (pred == ey).sum().item() / len(ey)


def test_monitor_logs_accuracy_at_start_and_each_epoch(tmp_path: Path) -> None:
    dm, model = DigitsStandIn(), EncoderStandIn(lr=0.05)
    expected_start = _direct_accuracy(model, dm, k=20, temperature=0.1)
    model.train()
    monitor = KNNMonitor(k=20, temperature=0.1, batch_size=100)
    trainer = Trainer(
        **trainer_kwargs(max_epochs=2, limit_train_batches=5, logger=CSVLogger(tmp_path), callbacks=[monitor])
    )
    trainer.fit(model, datamodule=dm)
    assert model.training  # train mode restored

    assert [epoch for epoch, _ in monitor.history] == [-1, 0, 1]
    assert monitor.initial_accuracy == pytest.approx(expected_start, abs=1e-12)
    assert monitor.last_accuracy == pytest.approx(
        _direct_accuracy(model, dm, k=20, temperature=0.1), abs=1e-12
    )
    assert all(0.3 < acc <= 1.0 for _, acc in monitor.history)  # chance is 0.1
    assert trainer.callback_metrics["knn_acc"].item() == pytest.approx(monitor.last_accuracy)

    (metrics_csv,) = tmp_path.rglob("metrics.csv")
    with open(metrics_csv) as f:
        rows = [(int(r["step"]), float(r["knn_acc"])) for r in csv.DictReader(f) if r.get("knn_acc")]
    # at-start value at step 0; Lightning writes epoch-end values at the epoch's last step (4, 9)
    assert [step for step, _ in rows] == [0, 4, 9]
    assert [acc for _, acc in rows] == pytest.approx([acc for _, acc in monitor.history])
    first, last = monitor.history[0][1], monitor.history[-1][1]
    assert monitor.summary() == f"knn_acc: {first:.4f} before training -> {last:.4f} after epoch 1"


@pytest.mark.filterwarnings("ignore:Found 1 module.s. in eval mode")
def test_monitor_does_not_change_the_training_run() -> None:
    """No global random draws, submodule modes restored: the observed run is bit-identical."""

    def run(callbacks: list) -> dict[str, torch.Tensor]:
        dm, model = DigitsStandIn(), EncoderStandIn(lr=0.1, dropout=0.3)
        model.encoder[1].eval()  # a submodule left in eval mode on purpose (e.g. a frozen BatchNorm)
        torch.manual_seed(1)
        Trainer(**trainer_kwargs(max_epochs=2, limit_train_batches=4, callbacks=callbacks)).fit(model, dm)
        assert not model.encoder[1].training and model.encoder[3].training
        return model.state_dict()

    plain = run([])
    monitored = run([KNNMonitor(k=5, max_bank_size=200, every_n_epochs=1)])
    assert all(torch.equal(plain[name], monitored[name]) for name in plain)


def test_monitor_every_n_epochs_bank_subset_and_explicit_datasets() -> None:
    dm, model = DigitsStandIn(), EncoderStandIn()
    monitor = KNNMonitor(
        k=5,
        every_n_epochs=2,
        evaluate_at_start=False,
        max_bank_size=300,
        bank_dataset=dm.splits["train"],
        eval_dataset=dm.splits["val"],
        log_name="knn_top1",
    )
    trainer = Trainer(**trainer_kwargs(max_epochs=4, limit_train_batches=2, callbacks=[monitor]))
    # plain dataloaders, no datamodule: the explicit data sets are enough
    trainer.fit(model, DataLoader(dm.train_set, batch_size=64), DataLoader(dm.splits["val"], batch_size=64))
    assert [epoch for epoch, _ in monitor.history] == [1, 3]
    assert monitor.initial_accuracy is None
    assert "knn_top1" in trainer.callback_metrics

    # the bank subset is evenly spaced and deterministic: equal to encoding those 300 items directly
    model.eval()
    with torch.no_grad():
        bx, by = dm.splits["train"].tensors
        idx = torch.arange(300) * len(by) // 300
        ex, ey = dm.splits["val"].tensors
        pred = knn_predict(model.encode(ex), model.encode(bx[idx]), by[idx], 10, k=5)
    assert monitor.last_accuracy == pytest.approx((pred == ey).sum().item() / len(ey), abs=1e-12)


def test_monitor_state_round_trip_skips_repeated_start_evaluation() -> None:
    monitor = KNNMonitor(k=5, max_bank_size=100)
    monitor.history = [(-1, 0.25), (0, 0.5)]
    restored = KNNMonitor(k=5, max_bank_size=100)
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history
    assert (restored.initial_accuracy, restored.last_accuracy) == (0.25, 0.5)
    assert KNNMonitor(log_name="a").state_key != KNNMonitor(log_name="b").state_key

    # a restored monitor does not re-evaluate "at start" (the encoder is no longer at random init)
    trainer = Trainer(
        **trainer_kwargs(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[restored])
    )
    with pytest.warns(UserWarning, match="evaluated nothing during fit"):
        trainer.fit(EncoderStandIn(), datamodule=DigitsStandIn())
    assert restored.history == [(-1, 0.25), (0, 0.5)]


def test_monitor_explains_missing_contract() -> None:
    class NoEncode(EncoderStandIn):
        encode = None  # type: ignore[assignment]

    trainer = Trainer(**trainer_kwargs(max_epochs=1, callbacks=[KNNMonitor()]))
    with pytest.raises(AttributeError, match="add an `encode` method"):
        trainer.fit(NoEncode(), datamodule=DigitsStandIn())

    dm = DigitsStandIn()
    loaders = (dm.train_dataloader(), dm.val_dataloader())
    trainer = Trainer(**trainer_kwargs(max_epochs=1, callbacks=[KNNMonitor()]))
    with pytest.raises(AttributeError, match=r"labelled_dataset\(split\)"):
        trainer.fit(EncoderStandIn(), *loaders)

    tiny_bank = Subset(dm.splits["val"], range(3))
    trainer = Trainer(**trainer_kwargs(max_epochs=1, callbacks=[KNNMonitor(k=5, bank_dataset=tiny_bank)]))
    with pytest.raises(ValueError, match="fewer than k=5"):
        trainer.fit(EncoderStandIn(), datamodule=dm)
