"""Images in a folder: one subfolder per class (labelled) or any tree of images (unlabelled)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from lightning_tl.augment.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.datasets import ImageSource
from lightning_tl.datamodules.splits import check_holdout, fraction_to_count, stratified_split

#: Formats ``torchvision.io.decode_image`` reads.
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def find_truncation(data: bytes | bytearray) -> str | None:
    """Why the encoded image ``data`` ends early, or None when its stream is complete (or not checked).

    A decoder-independent check of the file's bytes, because decoders accept some cut-off files:
    libpng (through ``torchvision.io.decode_image``) and Pillow both return an image from a PNG that
    lacks its closing chunks, Pillow even one that lacks the end of its compressed data. The format
    is read from the signature, not the file name:

    - PNG: the chunks are walked from the signature; every chunk must fit in the file, up to ``IEND``.
    - JPEG: an end-of-image marker (FFD9) must follow the last start-of-scan marker (FFDA); neither
      can occur inside entropy-coded data (byte stuffing), so an embedded EXIF thumbnail, which ends
      before the main scan starts, does not hide a cut-off main image.
    - WebP: the file must be as long as its RIFF header says.

    Bytes after the end marker are allowed, as decoders allow them. Other formats (GIF) are left to
    their decoder, which rejects a GIF cut anywhere before its one-byte trailer.
    """
    size = len(data)
    if data.startswith(PNG_SIGNATURE):
        offset = len(PNG_SIGNATURE)
        while offset + 8 <= size:
            length = int.from_bytes(data[offset : offset + 4], "big")
            kind = bytes(data[offset + 4 : offset + 8])
            end = offset + 12 + length  # length, type, data, CRC
            if end > size:
                return f"its PNG {kind.decode('latin-1')!r} chunk needs {end} bytes, the file has {size}"
            if kind == b"IEND":
                return None
            offset = end
        return f"its PNG stream stops after {size} bytes without the closing IEND chunk"
    if data.startswith(JPEG_SOI):
        scan = data.rfind(JPEG_SOS)
        if scan < 0:
            return f"its JPEG stream stops after {size} bytes, before any image data (no start of scan)"
        if data.rfind(JPEG_EOI) < scan:
            return f"its JPEG stream stops after {size} bytes, inside the image data (no end of image)"
        return None
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        expected = 8 + int.from_bytes(data[4:8], "little")
        if size < expected:
            return f"its WebP header announces {expected} bytes, the file has {size}"
    return None


def read_image_file(path: str) -> bytearray:
    """The bytes of ``path``; raises ``RuntimeError`` naming the file when it is unreadable or truncated."""
    try:
        with open(path, "rb") as file:
            data = bytearray(os.fstat(file.fileno()).st_size)
            read = file.readinto(data)
    except OSError as err:
        raise RuntimeError(f"cannot read image file {path}: {err.strerror or err}") from err
    del data[read:]  # the file shrank while being read
    if not data:
        raise RuntimeError(f"cannot decode image file {path}: it is empty. Remove or replace the file.")
    reason = find_truncation(data)
    if reason is not None:
        raise RuntimeError(
            f"cannot decode image file {path}: it is truncated ({reason}); an interrupted copy or "
            "download? Remove or replace the file."
        )
    return data


def decode(path: str, channels: int | None = None) -> Tensor:
    """Decode ``path`` to uint8 (C, H, W); ``channels=3`` converts to RGB, ``1`` insists on grayscale.

    Animated GIFs give their first frame; 16-bit PNGs are scaled to 8 bits; an alpha channel is dropped;
    an EXIF orientation (photos from phones and cameras) is applied, so images are upright as viewers
    show them. Raises ``RuntimeError`` naming the file when it cannot be read or decoded or is truncated
    (:func:`find_truncation`), and ``ValueError`` when a colour image turns up in a data set read
    as grayscale.
    """
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.UNCHANGED
    data = read_image_file(path)
    encoded = torch.frombuffer(data, dtype=torch.uint8)  # (num_bytes,), shares data's memory
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
            warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
            image = decode_image(encoded, mode=mode, apply_exif_orientation=True)
    except (RuntimeError, ValueError, OSError) as err:
        raise RuntimeError(
            f"cannot decode image file {path}: {str(err).rstrip('.')}. Remove or replace the file."
        ) from err
    if image.ndim == 4:
        image = image[0]  # (C, H, W): first frame
    if image.dtype == torch.uint16:
        image = (image.float() / 257).round().to(torch.uint8)
    if channels == 1 and image.shape[0] >= 3:
        raise ValueError(
            f"{path} is a colour image, but the data set is read as grayscale because its first image is; "
            "pass rgb=True to read every image as RGB"
        )
    return image[:1] if image.shape[0] == 2 else image[:3]  # drop alpha


class FolderImages:
    """Image files decoded lazily to uint8 (channels, H, W), with integer labels (-1: unlabelled)."""

    def __init__(self, paths: list[str], labels: list[int], channels: int) -> None:
        self.paths = paths
        self.labels = labels
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Tensor:
        return decode(self.paths[index], self.channels)

    def label(self, index: int) -> int:
        return self.labels[index]

    def subset(self, indices: Tensor) -> FolderImages:
        rows = indices.tolist()
        return FolderImages([self.paths[i] for i in rows], [self.labels[i] for i in rows], self.channels)


def _images_under(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Image files anywhere below ``folder`` (hidden files and folders skipped), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


class ImageFolderDataModule(VisionDataModule):
    """Your own images: ``root/<class>/**/<image>`` (``labelled=True``) or any tree (``labelled=False``).

    Labelled: class names are the sorted subfolder names of ``root`` (as torchvision's
    ``ImageFolder``; files directly in ``root`` are ignored), val/test are stratified fractions fixed
    by ``seed``. Unlabelled: every image below ``root`` with label -1, random val/test fractions;
    ``labelled_dataset`` then raises. For a separate validation folder, make a second datamodule.

    Images are decoded per item (``torchvision.io.decode_image``). Channels follow the first file
    (sorted order): colour -> 3, grayscale -> 1 (a later colour file then raises), ``rgb=True`` reads
    all as RGB. ``image_size=None`` takes the shorter side of that first file. Eval and supervised
    training resize the shorter side to ``image_size`` and centre-crop; SSL views are random
    resized crops of the full image, or, with a recipe's ``on_device`` (files of any sizes batched
    together), of that resized, centre-cropped image. A corrupt, truncated (:func:`find_truncation`)
    or unreadable file raises an error naming it, also from a DataLoader worker; none is skipped.
    Normalisation: ``normalize`` if given, else ImageNet's (their mean for 1 channel).

    Args:
        root: the image folder.
        labelled: class subfolders (True) or unlabelled tree (False).
        holdout: (val, test) fractions of the images held out.
        extensions: file suffixes read (case-insensitive).
        normalize: (mean, std) normalisation constants (1 or num_channels values each), or None.
        other arguments: see :class:`VisionDataModule`.
    """

    def __init__(
        self,
        root: str,
        *,
        labelled: bool = True,
        holdout: tuple[float, float] = (0.1, 0.0),
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        if not Path(root).is_dir():
            raise FileNotFoundError(f"image folder root={root!r} does not exist or is not a directory")
        self.holdout = check_holdout(holdout)
        if not extensions:
            raise ValueError("extensions must list at least one file suffix, e.g. ('.png', '.jpg')")
        if normalize is not None and len(normalize) != 2:
            raise ValueError(f"normalize must be [mean, std] (1 or 3 values each) or null, got {normalize}")
        mean, std = normalize if normalize is not None else (None, None)
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) not in (1, 3):
                raise ValueError(f"normalize's {name} needs 1 or 3 values (one per channel), got {values}")
        self.root = root
        self.labelled = labelled
        self.extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        self.mean_arg = list(mean) if mean is not None else None
        self.std_arg = list(std) if std is not None else None
        self._scan_cache: FolderImages | None = None
        self._classes: list[str] = []
        self._first_shape: tuple[int, int, int] | None = None
        self.save_hyperparameters()

    # ----------------------------------------------------------------- scanning
    def _scan(self) -> FolderImages:
        """List the files (cached) and read the first one for channels and size."""
        if self._scan_cache is not None:
            return self._scan_cache
        root = Path(self.root)
        searched = f"extensions {self.extensions}"
        paths: list[Path] = []
        labels: list[int] = []
        if self.labelled:
            classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            if not classes:
                flat = (
                    "; it holds images directly, pass labelled=False"
                    if _images_under(root, self.extensions)
                    else ""
                )
                raise FileNotFoundError(
                    f"labelled=True expects one subfolder per class (root/<class>/<image>) but {root} has no "
                    f"subfolders{flat}"
                )
            for label, name in enumerate(classes):
                files = _images_under(root / name, self.extensions)
                if not files:
                    raise FileNotFoundError(
                        f"class folder {root / name} has no images ({searched}); remove it"
                    )
                paths += files
                labels += [label] * len(files)
            self._classes = classes
        else:
            paths = _images_under(root, self.extensions)
            labels = [-1] * len(paths)
        if not paths:
            raise FileNotFoundError(f"no images found under {root} (searched recursively for {searched})")
        first = decode(str(paths[0]), 3 if self.rgb else None)
        self._first_shape = (1 if first.shape[0] == 1 else 3, first.shape[1], first.shape[2])
        channels = 3 if self.rgb else self._first_shape[0]
        self._scan_cache = FolderImages([str(p) for p in paths], labels, channels)
        return self._scan_cache

    # ----------------------------------------------------------------- VisionDataModule interface
    @property
    def num_classes(self) -> int:
        """Number of class subfolders (0 when unlabelled)."""
        self._scan()
        return len(self._classes)

    @property
    def class_names(self) -> list[str]:
        self._scan()
        return list(self._classes)

    def _native_image_size(self) -> int:
        self._scan()
        assert self._first_shape is not None
        return min(self._first_shape[1:])

    def _native_channels(self) -> int:
        return self._scan().channels

    def _load_splits(self) -> dict[str, ImageSource]:
        data = self._scan()
        n = len(data)
        sizes = [fraction_to_count(fraction, n) for fraction in self.holdout]
        train, val, test = stratified_split(data.labels, sizes, seed=self.seed)
        return {"train": data.subset(train), "val": data.subset(val), "test": data.subset(test)}

    def _mean_std(self, train: ImageSource) -> tuple[list[float], list[float]]:
        channels = self._native_channels()
        if self.mean_arg is not None and self.std_arg is not None:
            mean, std = list(self.mean_arg), list(self.std_arg)
        elif channels == 3:
            mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        else:
            mean, std = [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]
        if len(mean) == 1 and channels == 3:
            mean, std = mean * 3, std * 3
        return mean, std

    def _resize_steps(self) -> list[Callable[[Tensor], Tensor]]:
        return [v2.Resize(self.image_size, antialias=True), v2.CenterCrop(self.image_size)]

    def _device_view_steps(self) -> list[Callable[[Tensor], Tensor]]:
        # Files differ in size, a batch needs one: the batched views crop from the image resized to
        # image_size (shorter side) and centre-cropped, where the per-sample path crops the full file.
        return self._resize_steps()

    def labelled_dataset(self, split: str) -> Dataset:
        if not self.labelled:
            raise ValueError(
                f"ImageFolderDataModule(labelled=False) has no labels, so labelled_dataset({split!r}) is "
                "unavailable; use a folder with one subfolder per class and labelled=True"
            )
        return super().labelled_dataset(split)
