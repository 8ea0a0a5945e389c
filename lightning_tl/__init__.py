"""lightning-tl: PyTorch Lightning plugins for transfer learning.

The public API, flat::

    from lightning_tl import SimCLR, DigitsDataModule, KNNMonitor, create_backbone, nt_xent_loss
"""

from lightning_tl.backbones import Backbone, create_backbone, list_backbones
from lightning_tl.callbacks import KNNMonitor, OnlineLinearProbe
from lightning_tl.datamodules import (
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    VisionDataModule,
)
from lightning_tl.heads import LinearHead, ProjectionHead, SimCLRProjectionHead
from lightning_tl.losses import NTXentLoss, nt_xent_loss
from lightning_tl.modules import SimCLR

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "KNNMonitor",
    "LinearHead",
    "NTXentLoss",
    "OnlineLinearProbe",
    "ProjectionHead",
    "SimCLR",
    "SimCLRProjectionHead",
    "VisionDataModule",
    "__version__",
    "create_backbone",
    "list_backbones",
    "nt_xent_loss",
]

from lightning_tl.callbacks import FreezeSchedule, freeze_param_groups
from lightning_tl.modules import ImageClassifier

__all__ += ["FreezeSchedule", "ImageClassifier", "freeze_param_groups"]
