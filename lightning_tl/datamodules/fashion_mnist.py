"""Fashion-MNIST (Xiao et al. 2017): 70,000 real 28x28 grayscale garment photos in 10 classes."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.datasets import ImageSource, InMemoryImages, resize_uint8
from lightning_tl.datamodules.splits import stratified_split

#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the gzip IDX files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
TRAIN_SIZE = 60_000


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (LeCun's MNIST format), gzip-compressed if it ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number {data[:4]!r})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(dims):
        raise ValueError(
            f"{path} is truncated or corrupt: header says {dims}, found {len(data) - offset} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def candidate_dirs(root: str | None) -> list[Path]:
    """Folders searched: ``root`` and ``root/FashionMNIST/raw`` (torchvision's layout), else Debian's."""
    if root is None:
        return [Path(DEBIAN_DIR)]
    return [Path(root), Path(root) / "FashionMNIST" / "raw"]


def find_files(root: str | None) -> dict[str, Path]:
    """Paths of the four IDX files (``.gz`` or uncompressed) in the first folder that has all of them."""
    searched = []
    for folder in candidate_dirs(root):
        found = {}
        for key, name in FILES.items():
            for candidate in (folder / f"{name}.gz", folder / name):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
        searched.append(str(folder))
    names = ", ".join(f"{n}.gz" for n in FILES.values())
    raise FileNotFoundError(
        f"Fashion-MNIST not found: looked for {names} in {searched}. Fix: `apt-get install "
        f"dataset-fashion-mnist` (installs them in {DEBIAN_DIR}), or pass root=<folder with the files>, "
        f"or pass root=<folder> and download=True to fetch them with torchvision."
    )


def load_fashion_mnist(
    root: str | None = None, image_size: int | None = 28, val_size: int = 5000, seed: int = 0
) -> dict[str, InMemoryImages]:
    """Fashion-MNIST's uint8 "train" / "val" / "test" sources at ``image_size``, from :func:`find_files`.

    ``val_size`` images are held out of the official train set (stratified, fixed by ``seed``); the
    test split is the official one. Shared by :class:`FashionMNISTDataModule`, Fashion-MNIST-M and the
    captioned Fashion-MNIST.
    """
    paths = find_files(root)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{paths[f'{split}_images']} and {paths[f'{split}_labels']} do not match: "
                f"images {images.shape}, labels {labels.shape}"
            )

    def source(split: str) -> InMemoryImages:
        images = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)  # (N, 1, 28, 28)
        labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))  # (N,)
        return InMemoryImages(resize_uint8(images, image_size or 28), labels)

    full_train = source("train")
    train, val = stratified_split(full_train.labels, [val_size], seed=seed)
    return {"train": full_train.subset(train), "val": full_train.subset(val), "test": source("test")}


class FashionMNISTDataModule(VisionDataModule):
    """Fashion-MNIST from local gzip IDX files; downloads only with ``download=True``.

    Files are read from ``root`` (the four ``*-ubyte.gz`` files directly in it, or torchvision's
    layout ``root/FashionMNIST/raw/``); with ``root=None`` from the Debian package's
    ``/usr/share/datasets/fashion-mnist/``. ``val_size`` images are held out of the official
    60,000-image train set (stratified by class, fixed by ``seed``); the test split is the official
    10,000. Normalisation constants are the exact mean/std of the train split (about 0.286 / 0.353).
    Data are loaded in ``setup``; arguments and file presence are checked in ``__init__``.

    Args:
        root: folder holding the files; ``None`` for the Debian package's folder.
        download: fetch the files into ``root`` with torchvision in ``prepare_data`` (needs ``root``).
        val_size: number of train images held out for validation (0 to 59,999).
        image_size: side of the images (default 28, native; e.g. 32 upsamples once at load).
        other arguments: see :class:`VisionDataModule`.
    """

    NATIVE_SIZE = 28
    NATIVE_CHANNELS = 1

    def __init__(
        self,
        root: str | None = None,
        *,
        download: bool = False,
        val_size: int = 5000,
        image_size: int | None = 28,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        if not 0 <= val_size < TRAIN_SIZE:
            raise ValueError(f"val_size must be in [0, {TRAIN_SIZE}) images of the train set, got {val_size}")
        if download and root is None:
            raise ValueError(
                "download=True needs root=<folder to download into>; or install the data with "
                "`apt-get install dataset-fashion-mnist` and leave download=False"
            )
        if not download:
            find_files(root)  # fail now, not after the model is built
        self.root = root
        self.download = download
        self.val_size = val_size
        self.save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def prepare_data(self) -> None:
        """Download with torchvision when ``download=True`` (Lightning runs this on one process)."""
        if self.download:
            from torchvision.datasets import FashionMNIST

            assert self.root is not None
            for train in (True, False):
                FashionMNIST(self.root, train=train, download=True)

    def _load_splits(self) -> dict[str, ImageSource]:
        return dict(load_fashion_mnist(self.root, self.image_size, self.val_size, self.seed))
