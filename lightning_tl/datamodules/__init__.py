"""Datamodules: uint8 images in, supervised or multi-view SSL batches out; deterministic and resumable."""

from lightning_tl.datamodules.base import VisionDataModule
from lightning_tl.datamodules.blended import DigitsMDataModule, FashionMNISTMDataModule
from lightning_tl.datamodules.digits import DigitsDataModule
from lightning_tl.datamodules.domain import DomainAdaptationDataModule
from lightning_tl.datamodules.fashion_mnist import FashionMNISTDataModule
from lightning_tl.datamodules.image_folder import ImageFolderDataModule
from lightning_tl.datamodules.image_text import ImageTextDataModule
from lightning_tl.datamodules.loader import ResumableDataLoader
from lightning_tl.datamodules.mixing import BatchMixing
from lightning_tl.datamodules.multi_domain import MultiDomainDataModule
from lightning_tl.datamodules.policies import PolicySpec, build_policy, parse_policy
from lightning_tl.datamodules.sampling import SeededSampler, UnpaddedDistributedSampler
from lightning_tl.datamodules.transforms import MultiViewTransform, simclr_view_transform

__all__ = [
    "BatchMixing",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainAdaptationDataModule",
    "FashionMNISTDataModule",
    "FashionMNISTMDataModule",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "MultiDomainDataModule",
    "MultiViewTransform",
    "PolicySpec",
    "ResumableDataLoader",
    "SeededSampler",
    "UnpaddedDistributedSampler",
    "VisionDataModule",
    "build_policy",
    "parse_policy",
    "simclr_view_transform",
]
