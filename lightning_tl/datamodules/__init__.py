"""Datamodules: uint8 images in, supervised or multi-view SSL batches out; deterministic and resumable.

Data only: what the augmentation is comes from :mod:`lightning_tl.augment` objects passed as ``views:``
(view recipes) and ``augment:`` (:class:`~lightning_tl.augment.SupervisedAugment`).
"""

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule, FashionMNISTMDataModule
from lightning_tl.datamodules.caption_file import CaptionFile
from lightning_tl.datamodules.caption_shards import CaptionShards
from lightning_tl.datamodules.digits import DigitsDataModule, load_digits
from lightning_tl.datamodules.domain import DomainAdaptationDataModule
from lightning_tl.datamodules.fashion_mnist import FashionMNISTDataModule, load_fashion_mnist
from lightning_tl.datamodules.image_folder import ImageFolderDataModule
from lightning_tl.datamodules.image_text import ImageTextDataModule
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.multi_domain import MultiDomainDataModule
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler

__all__ = [
    "CaptionFile",
    "CaptionShards",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainAdaptationDataModule",
    "FashionMNISTDataModule",
    "FashionMNISTMDataModule",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "MultiDomainDataModule",
    "ResumableDataLoader",
    "SeededSampler",
    "UnpaddedDistributedSampler",
    "VisionDataModule",
    "load_digits",
    "load_fashion_mnist",
]
