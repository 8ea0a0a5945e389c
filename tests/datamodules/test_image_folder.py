"""ImageFolderDataModule on images written to tmp_path: labelled, unlabelled, channels, sizes, errors."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from own_data import image_bytes, labelled_folder, truncate, write_image
from PIL import Image
from torchvision.io import decode_image, write_png

from lightning_tl.augment import IMAGENET_MEAN, IMAGENET_STD, SimCLRViews
from lightning_tl.datamodules import ImageFolderDataModule
from lightning_tl.datamodules.image_folder import decode, find_truncation


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
    dm = ImageFolderDataModule(str(labelled_root), batch_size=4, holdout=(1 / 3, 1 / 6))
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
    dm = ImageFolderDataModule(
        str(tmp_path), labelled=False, image_size=32, views=SimCLRViews(), batch_size=4
    )
    assert not dm.device_views  # files: per-sample views unless the recipe asks for on_device
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
    gray = ImageFolderDataModule(str(tmp_path), batch_size=2, holdout=(0, 0))
    assert gray.num_channels == 1
    x, _ = next(iter(gray.train_dataloader()))
    assert x.shape == (2, 1, 16, 16)
    rgb = ImageFolderDataModule(str(tmp_path), batch_size=2, holdout=(0, 0), rgb=True, image_size=8)
    x, _ = next(iter(rgb.train_dataloader()))
    assert rgb.num_channels == 3 and x.shape == (2, 3, 8, 8)
    # a colour file in a folder read as grayscale is an error, not a silent conversion
    _write(tmp_path / "x" / "9.png", channels=3, size=(16, 16))
    late = ImageFolderDataModule(str(tmp_path), batch_size=8, holdout=(0, 0))
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
    with pytest.raises(ValueError, match=r"holdout fractions .* got holdout=\[1\.0, 0\.0\]"):
        ImageFolderDataModule(str(empty), holdout=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"normalize must be \[mean, std\] .* got \[\[0\.5\]\]"):
        ImageFolderDataModule(str(empty), normalize=[[0.5]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"normalize must be \[mean, std\]"):
        ImageFolderDataModule(str(empty), normalize=([0.5], [0.2], [0.1]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"normalize's std needs 1 or 3 values .*got \[0\.2, 0\.2\]"):
        ImageFolderDataModule(str(empty), normalize=([0.5], [0.2, 0.2]))
    with pytest.raises(ValueError, match="extensions must list at least one file suffix"):
        ImageFolderDataModule(str(empty), extensions=())


def test_normalize_or_imagenet_statistics(labelled_root: Path, tmp_path: Path) -> None:
    assert ImageFolderDataModule(str(labelled_root)).mean == list(IMAGENET_MEAN)
    assert ImageFolderDataModule(str(labelled_root)).std == list(IMAGENET_STD)
    dm = ImageFolderDataModule(str(labelled_root), normalize=([0.5], [0.25]), batch_size=18, holdout=(0, 0))
    assert dm.mean == [0.5] * 3 and dm.std == [0.25] * 3  # one value for every channel
    assert dm.hparams["normalize"] == ([0.5], [0.25])
    x, _ = next(iter(dm.train_dataloader()))  # every file is one grey level: 40 * label + index
    levels = {round(float(v) * 0.25 * 255 + 0.5 * 255) for v in x[:, 0, 12, 12]}  # undo (x - 0.5) / 0.25
    assert levels <= {40 * label + i for label in range(3) for i in range(6)} and len(levels) > 1
    per_channel = ImageFolderDataModule(str(labelled_root), normalize=((0.1, 0.2, 0.3), (0.5, 0.5, 0.5)))
    assert per_channel.mean == [0.1, 0.2, 0.3]
    gray = tmp_path / "gray"
    _write(gray / "x" / "0.png", channels=1, size=(8, 8))
    assert ImageFolderDataModule(str(gray)).mean == pytest.approx([sum(IMAGENET_MEAN) / 3])


def test_corrupt_file_raises_naming_it(labelled_root: Path) -> None:
    bad = labelled_root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dm = ImageFolderDataModule(str(labelled_root), batch_size=64, holdout=(0, 0))
    with pytest.raises(RuntimeError, match=r"cannot decode image file .*broken\.png"):
        next(iter(dm.train_dataloader()))


# ----------------------------------------------------------------- truncated files
def _encoded(fmt: str, size: tuple[int, int] = (40, 56)) -> bytes:
    return image_bytes(7, size, fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_find_truncation_flags_every_cut(fmt: str) -> None:
    data = _encoded(fmt)
    assert find_truncation(data) is None
    assert find_truncation(data + b"\x00trailing bytes") is None  # decoders allow bytes after the end
    signature = {"PNG": 8, "JPEG": 2, "WEBP": 12}[fmt]  # shorter: no format to check, the decoder rejects it
    missed = [cut for cut in range(signature, len(data)) if find_truncation(data[:cut]) is None]
    assert missed == []


def test_truncated_pngs_that_decoders_accept_are_caught(tmp_path: Path) -> None:
    data = _encoded("PNG")
    no_iend = data[:-12]  # the image data is all there, the closing IEND chunk is not
    no_checksum = data[:-19]  # the last 3 bytes of the compressed stream are missing too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decode_image(torch.frombuffer(bytearray(no_iend), dtype=torch.uint8))  # libpng: no error
    Image.open(io.BytesIO(no_iend)).load()  # Pillow: no error either
    Image.open(io.BytesIO(no_checksum)).load()
    for name, cut in (("a.png", no_iend), ("b.png", no_checksum)):
        (tmp_path / name).write_bytes(cut)
        with pytest.raises(RuntimeError, match=rf"image file \S*{name}: it is truncated \(its PNG"):
            decode(str(tmp_path / name))


def test_jpeg_thumbnail_does_not_hide_a_truncated_main_image() -> None:
    main, thumb = _encoded("JPEG", (60, 80)), _encoded("JPEG", (8, 10))
    exif = b"Exif\x00\x00" + thumb  # an APP1 segment carrying a complete JPEG (with its own FFD9)
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    data = main[:2] + app1 + main[2:]
    assert find_truncation(data) is None
    assert "inside the image data" in str(find_truncation(data[:-40]))


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_in_a_folder_raises_naming_it(tmp_path: Path, suffix: str) -> None:
    labelled_folder(tmp_path, per_class=2)
    truncate(write_image(tmp_path / "cat" / f"cut{suffix}", 5, (50, 60)), keep=0.5)
    dm = ImageFolderDataModule(str(tmp_path), batch_size=64, holdout=(0, 0))
    with pytest.raises(RuntimeError, match=rf"image file \S*cat/cut\{suffix}: it is truncated"):
        next(iter(dm.train_dataloader()))


def test_empty_and_unreadable_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"empty\.png: it is empty"):
        decode(str(tmp_path / "empty.png"))
    with pytest.raises(RuntimeError, match=r"cannot read image file \S*gone\.png"):
        decode(str(tmp_path / "gone.png"))


# ----------------------------------------------------------------- users' folders
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display (a portrait phone photo)
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(tmp_path / "phone.jpg", exif=exif)
    assert decode(str(tmp_path / "phone.jpg"), 3).shape == (3, 40, 20)


def _mixed_folder(root: Path) -> Path:
    """PNGs and JPEGs of several sizes, plus grayscale, RGBA and palette PNGs, in nested folders."""
    labelled_folder(root, per_class=3)
    pixels = np.random.default_rng(0).integers(0, 256, (45, 25, 4), dtype=np.uint8)
    Image.fromarray(pixels[..., 0]).save(root / "cat" / "gray.png")
    Image.fromarray(pixels, "RGBA").save(root / "dog" / "alpha.png")
    Image.fromarray(pixels[..., :3]).convert("P").save(root / "eel" / "palette.png")
    return root


@pytest.mark.parametrize("image_size", [24, None])
def test_device_views_of_images_of_any_size(tmp_path: Path, image_size: int | None) -> None:
    root = _mixed_folder(tmp_path)
    dm = ImageFolderDataModule(
        str(root),
        views=SimCLRViews(on_device=True),
        rgb=True,
        image_size=image_size,
        batch_size=4,
        holdout=(0, 0),
    )
    side = image_size or 20  # None: the shorter side of the first file (cat/cat0.png, 20x30)
    assert dm.device_views and dm.image_size == side
    batches = list(dm.train_dataloader())  # every file, each resized on load to one shape
    assert len(batches) == 3 and all(b.images.shape == (4, 3, side, side) for b in batches)
    views, labels = dm.on_after_batch_transfer(batches[0], 0)
    assert [tuple(v.shape) for v in views] == [(4, 3, side, side)] * 2
    assert all(bool(torch.isfinite(v).all()) for v in views) and labels.shape == (4,)
    per_sample = ImageFolderDataModule(
        str(root), views=SimCLRViews(on_device=False), rgb=True, image_size=16, batch_size=4
    )
    views, _ = next(iter(per_sample.train_dataloader()))  # crops of the full files, same shapes
    assert [tuple(v.shape) for v in views] == [(4, 3, 16, 16)] * 2


def test_nested_class_folders(tmp_path: Path) -> None:
    root = labelled_folder(tmp_path)
    (root / "dog" / ".thumbnails").mkdir()
    write_image(root / "dog" / ".thumbnails" / "x.png", 0, (8, 8))  # hidden: skipped
    dm = ImageFolderDataModule(str(root), holdout=(0, 0))
    assert dm.class_names == ["cat", "dog", "eel"]
    data = dm._scan()
    dogs = [p for p, y in zip(data.paths, data.labels, strict=True) if y == 1]
    assert len(dogs) == 6 and {str(Path(p).parent.relative_to(root)) for p in dogs} == {
        "dog",
        "dog/indoor/sofa",
        "dog/outdoor",
    }
    assert data.labels.count(0) == data.labels.count(2) == 6
