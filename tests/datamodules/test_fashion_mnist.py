"""FashionMNISTDataModule: Debian files, torchvision layout, splits, clear errors."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch

from lightning_tl.augment import SimCLRViews
from lightning_tl.datamodules import FashionMNISTDataModule
from lightning_tl.datamodules.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, FILES, read_idx

pytestmark = pytest.mark.skipif(
    not Path(DEBIAN_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason="needs `apt-get install dataset-fashion-mnist`",
)


@pytest.fixture(scope="module")
def fmnist() -> FashionMNISTDataModule:
    dm = FashionMNISTDataModule(batch_size=64, views=SimCLRViews())
    dm.setup("fit")
    return dm


def test_debian_files_load_with_official_splits(fmnist: FashionMNISTDataModule) -> None:
    splits = fmnist.splits()
    assert {k: len(v) for k, v in splits.items()} == {"train": 55_000, "val": 5_000, "test": 10_000}
    counts = torch.bincount(splits["val"].labels, minlength=10)
    assert counts.tolist() == [500] * 10  # stratified hold-out from the 60k train set
    assert fmnist.class_names == CLASS_NAMES and fmnist.num_classes == 10 and fmnist.num_channels == 1
    assert abs(fmnist.mean[0] - 0.286) < 0.002 and abs(fmnist.std[0] - 0.353) < 0.002


def test_batches(fmnist: FashionMNISTDataModule) -> None:
    views, y = fmnist.on_after_batch_transfer(next(iter(fmnist.train_dataloader())), 0)
    assert len(views) == 2 and all(v.shape == (64, 1, 28, 28) for v in views)
    assert y.dtype == torch.int64 and not torch.equal(views[0], views[1])
    x, y = next(iter(fmnist.test_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    labels = read_idx(Path(DEBIAN_DIR, "t10k-labels-idx1-ubyte.gz"))
    assert y.tolist() == labels[:64].tolist()  # test split in the official order
    item_x, item_y = fmnist.labelled_dataset("test")[0]
    assert torch.equal(item_x, x[0]) and item_y == int(labels[0])


def test_torchvision_layout_and_rgb(tmp_path: Path) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES.values():
        os.symlink(Path(DEBIAN_DIR, f"{name}.gz"), raw / f"{name}.gz")
    dm = FashionMNISTDataModule(str(tmp_path), rgb=True, val_size=1000, batch_size=8)
    x, _ = next(iter(dm.val_dataloader()))
    assert x.shape == (8, 3, 28, 28) and torch.equal(x[:, 0], x[:, 1])
    assert len(dm.labelled_dataset("val")) == 1000 and len(dm.labelled_dataset("train")) == 59_000


def test_missing_files_error_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        FashionMNISTDataModule(str(tmp_path))
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message and "root=" in message
    assert str(tmp_path) in message and str(tmp_path / "FashionMNIST" / "raw") in message


def test_download_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((root, train, download))

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    FashionMNISTDataModule(str(tmp_path), download=True).prepare_data()  # no file check before download
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    with pytest.raises(ValueError, match="download=True needs root"):
        FashionMNISTDataModule(download=True)
    with pytest.raises(ValueError, match="val_size"):
        FashionMNISTDataModule(val_size=60_000)


def test_corrupt_idx_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # header says 5 bytes, only 3
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad)
