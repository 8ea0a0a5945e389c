"""train_subset: a seeded, class-stratified labelled subset of the train split (labelled-data budgets)."""

from __future__ import annotations

import pytest
import torch

from lightning_tl.datamodules import DigitsDataModule, FashionMNISTDataModule


def _labels(dm: DigitsDataModule | FashionMNISTDataModule) -> torch.Tensor:
    train = dm.labelled_dataset("train")
    return torch.tensor([int(train[i][1]) for i in range(len(train))])


def test_subset_is_stratified_seeded_and_keeps_full_split_normalisation() -> None:
    full = DigitsDataModule(batch_size=8)
    dm = DigitsDataModule(batch_size=8, train_subset=100)
    labels = _labels(dm)
    assert len(labels) == 100
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10  # digits' classes are ~balanced
    assert dm.mean == full.mean and dm.std == full.std
    assert torch.equal(labels, _labels(DigitsDataModule(batch_size=8, train_subset=100)))
    other = DigitsDataModule(batch_size=8, train_subset=100, seed=1)
    assert not torch.equal(other.splits()["train"].images, dm.splits()["train"].images)  # type: ignore[attr-defined]
    assert len(dm.labelled_dataset("val")) == len(full.labelled_dataset("val"))  # val/test untouched
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape[0] == 8


def test_fashion_mnist_forwards_train_subset() -> None:
    dm = FashionMNISTDataModule(batch_size=8, train_subset=1000)
    assert torch.bincount(_labels(dm), minlength=10).tolist() == [100] * 10


def test_bad_train_subset() -> None:
    with pytest.raises(ValueError, match="train_subset must be >= 1"):
        DigitsDataModule(train_subset=0)
    with pytest.raises(ValueError, match="train_subset=5000 but the train split has"):
        DigitsDataModule(train_subset=5000).setup()
