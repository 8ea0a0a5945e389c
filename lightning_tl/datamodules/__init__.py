"""Datamodules: uint8 images in, supervised or multi-view SSL batches out; deterministic and resumable."""

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.digits import DigitsDataModule
from lightning_tl.datamodules.fashion_mnist import FashionMNISTDataModule
from lightning_tl.datamodules.image_folder import ImageFolderDataModule
from lightning_tl.datamodules.image_text import ImageTextDataModule
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.transforms import MultiViewTransform, simclr_view_transform

__all__ = [
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "MultiViewTransform",
    "ResumableDataLoader",
    "SeededSampler",
    "UnpaddedDistributedSampler",
    "VisionDataModule",
    "simclr_view_transform",
]
