"""lightning-tl: PyTorch Lightning plugins for transfer learning.

The public API, flat::

    from lightning_tl import SimCLR, DigitsDataModule, KNNMonitor, create_backbone, nt_xent_loss
"""

from lightning_tl.backbones import Backbone, create_backbone, list_backbones
from lightning_tl.callbacks import (
    FreezeSchedule,
    KNNMonitor,
    OnlineLinearProbe,
    ZeroShotEvaluator,
    freeze_param_groups,
    zero_shot_classifier,
)
from lightning_tl.datamodules import (
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    ImageTextDataModule,
    VisionDataModule,
)
from lightning_tl.heads import LinearHead, ProjectionHead, SimCLRProjectionHead
from lightning_tl.losses import CLIPLoss, InfoNCELoss, NTXentLoss, clip_loss, info_nce_loss, nt_xent_loss
from lightning_tl.modules import CLIP, ImageClassifier, MoCo, SimCLR
from lightning_tl.nn import MemoryQueue, cosine_momentum, update_momentum

__version__ = "0.1.0"

__all__ = [
    "CLIP",
    "Backbone",
    "CLIPLoss",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FreezeSchedule",
    "ImageClassifier",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "InfoNCELoss",
    "KNNMonitor",
    "LinearHead",
    "MemoryQueue",
    "MoCo",
    "NTXentLoss",
    "OnlineLinearProbe",
    "ProjectionHead",
    "SimCLR",
    "SimCLRProjectionHead",
    "VisionDataModule",
    "ZeroShotEvaluator",
    "__version__",
    "clip_loss",
    "cosine_momentum",
    "create_backbone",
    "freeze_param_groups",
    "info_nce_loss",
    "list_backbones",
    "nt_xent_loss",
    "update_momentum",
    "zero_shot_classifier",
]
