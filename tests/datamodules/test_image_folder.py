"""ImageFolderDataModule on PNGs written to tmp_path: labelled, unlabelled, channels, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from lightning_tl.datamodules import ImageFolderDataModule


def _write(path: Path, channels: int = 3, size: tuple[int, int] = (24, 30), value: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        image = torch.randint(0, 256, (channels, *size), dtype=torch.uint8)
    else:
        image = torch.full((channels, *size), value, dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its encoders (TorchCodec)
        warnings.simplefilter("ignore", DeprecationWarning)
        write_png(image, str(path))


@pytest.fixture
def labelled_root(tmp_path: Path) -> Path:
    for label, name in enumerate(["cat", "dog", "eel"]):
        for i in range(6):
            _write(tmp_path / name / f"{i}.png", value=40 * label + i)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    return tmp_path


def test_labelled_folder(labelled_root: Path) -> None:
    dm = ImageFolderDataModule(str(labelled_root), batch_size=4, val_fraction=1 / 3, test_fraction=1 / 6)
    assert dm.class_names == ["cat", "dog", "eel"] and dm.num_classes == 3
    assert dm.num_channels == 3 and dm.image_size == 24  # shorter side of the first image
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    sizes = {s: len(dm.labelled_dataset(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 9, "val": 6, "test": 3}
    val_labels = sorted(dm.labelled_dataset("val")[i][1] for i in range(6))
    assert val_labels == [0, 0, 1, 1, 2, 2]  # stratified
    # every image is in exactly one split (pixel value encodes the file)
    seen = []
    for split in ("train", "val", "test"):
        ds = dm.labelled_dataset(split)
        seen += [round(float(ds[i][0][0, 0, 0]), 4) for i in range(len(ds))]
    assert len(set(seen)) == 18


def test_unlabelled_folder_ssl_and_resize(tmp_path: Path) -> None:
    for i in range(5):
        _write(tmp_path / "a" / f"{i}.png", size=(40, 50))
        _write(tmp_path / "b" / "deep" / f"{i}.PNG", size=(64, 48))
    dm = ImageFolderDataModule(str(tmp_path), labelled=False, image_size=32, num_views=2, batch_size=4)
    assert dm.num_classes == 0 and dm.class_names == []
    views, y = next(iter(dm.train_dataloader()))
    assert len(views) == 2 and views[0].shape == (4, 3, 32, 32) and y.tolist() == [-1] * 4
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [-1]
    with pytest.raises(ValueError, match="labelled=False"):
        dm.labelled_dataset("train")


def test_grayscale_and_rgb(tmp_path: Path) -> None:
    for i in range(4):
        _write(tmp_path / "x" / f"{i}.png", channels=1, size=(16, 16))
    gray = ImageFolderDataModule(str(tmp_path), batch_size=2, val_fraction=0)
    assert gray.num_channels == 1
    x, _ = next(iter(gray.train_dataloader()))
    assert x.shape == (2, 1, 16, 16)
    rgb = ImageFolderDataModule(str(tmp_path), batch_size=2, val_fraction=0, rgb=True, image_size=8)
    x, _ = next(iter(rgb.train_dataloader()))
    assert rgb.num_channels == 3 and x.shape == (2, 3, 8, 8)
    # a colour file in a folder read as grayscale is an error, not a silent conversion
    _write(tmp_path / "x" / "9.png", channels=3, size=(16, 16))
    late = ImageFolderDataModule(str(tmp_path), batch_size=8, val_fraction=0)
    with pytest.raises(ValueError, match=r"9\.png is a colour image.*rgb=True"):
        next(iter(late.train_dataloader()))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images found.*\.png"):
        ImageFolderDataModule(str(empty), labelled=False).setup()
    with pytest.raises(FileNotFoundError, match="one subfolder per class"):
        ImageFolderDataModule(str(empty)).setup()
    (empty / "cls").mkdir()
    with pytest.raises(FileNotFoundError, match=r"cls has no images"):
        ImageFolderDataModule(str(empty)).setup()
    with pytest.raises(ValueError, match="val_fraction"):
        ImageFolderDataModule(str(empty), val_fraction=1.0)
    with pytest.raises(ValueError, match="both mean and std"):
        ImageFolderDataModule(str(empty), mean=(0.5,))


def test_corrupt_file_raises_naming_it(labelled_root: Path) -> None:
    bad = labelled_root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dm = ImageFolderDataModule(str(labelled_root), batch_size=64, val_fraction=0)
    with pytest.raises(RuntimeError, match=r"cannot decode image file .*broken\.png"):
        next(iter(dm.train_dataloader()))
