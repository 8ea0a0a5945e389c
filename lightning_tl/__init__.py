"""lightning-tl: PyTorch Lightning plugins for transfer learning.

The public API, flat::

    from lightning_tl import SimCLR, DigitsDataModule, KNNMonitor, create_backbone, nt_xent_loss
"""

from lightning_tl.backbones import Backbone, create_backbone, list_backbones
from lightning_tl.callbacks import FreezeSchedule, KNNMonitor, OnlineLinearProbe, freeze_param_groups
from lightning_tl.datamodules import (
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MultiDomainDataModule,
    VisionDataModule,
)
from lightning_tl.heads import LinearHead, ProjectionHead, SimCLRProjectionHead
from lightning_tl.losses import InfoNCELoss, NTXentLoss, info_nce_loss, nt_xent_loss
from lightning_tl.modules import AdapterResNet, ImageClassifier, MoCo, SimCLR
from lightning_tl.nn import (
    MemoryQueue,
    cosine_momentum,
    inject_adapters,
    inject_lora,
    merge_adapters,
    merge_lora,
    set_domain,
    update_momentum,
)

__version__ = "0.1.0"

__all__ = [
    "AdapterResNet",
    "Backbone",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "FreezeSchedule",
    "ImageClassifier",
    "ImageFolderDataModule",
    "InfoNCELoss",
    "KNNMonitor",
    "LinearHead",
    "MemoryQueue",
    "MoCo",
    "MultiDomainDataModule",
    "NTXentLoss",
    "OnlineLinearProbe",
    "ProjectionHead",
    "SimCLR",
    "SimCLRProjectionHead",
    "VisionDataModule",
    "__version__",
    "cosine_momentum",
    "create_backbone",
    "freeze_param_groups",
    "info_nce_loss",
    "inject_adapters",
    "inject_lora",
    "list_backbones",
    "merge_adapters",
    "merge_lora",
    "nt_xent_loss",
    "set_domain",
    "update_momentum",
]
