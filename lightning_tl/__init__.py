"""lightning-tl: PyTorch Lightning plugins for transfer learning.

The public API, flat::

    from lightning_tl import SimCLR, DigitsDataModule, KNNMonitor, create_backbone, nt_xent_loss"""

from lightning_tl.backbones import Backbone, create_backbone, list_backbones
from lightning_tl.callbacks import (
    ChannelsLast,
    FreezeSchedule,
    KNNMonitor,
    LastCheckpoint,
    OnlineLinearProbe,
    ZeroShotEvaluator,
    freeze_param_groups,
    zero_shot_classifier,
)
from lightning_tl.datamodules import (
    BatchMixing,
    DigitsDataModule,
    DigitsMDataModule,
    DomainAdaptationDataModule,
    FashionMNISTDataModule,
    FashionMNISTMDataModule,
    ImageFolderDataModule,
    ImageTextDataModule,
    MultiDomainDataModule,
    VisionDataModule,
    build_policy,
)
from lightning_tl.heads import DomainClassifier, LinearHead, ProjectionHead, SimCLRProjectionHead
from lightning_tl.losses import CLIPLoss, InfoNCELoss, NTXentLoss, clip_loss, info_nce_loss, nt_xent_loss
from lightning_tl.modules import CLIP, DANN, AdapterResNet, ImageClassifier, MoCo, SimCLR
from lightning_tl.nn import (
    GradientReversal,
    MemoryQueue,
    SmallConvNet,
    cosine_momentum,
    dann_coeff,
    grad_reverse,
    inject_adapters,
    inject_lora,
    merge_adapters,
    merge_lora,
    set_domain,
    update_momentum,
)

__version__ = "0.1.0"

__all__ = [
    "CLIP",
    "DANN",
    "AdapterResNet",
    "Backbone",
    "BatchMixing",
    "CLIPLoss",
    "ChannelsLast",
    "DigitsDataModule",
    "DigitsMDataModule",
    "DomainAdaptationDataModule",
    "DomainClassifier",
    "FashionMNISTDataModule",
    "FashionMNISTMDataModule",
    "FreezeSchedule",
    "GradientReversal",
    "ImageClassifier",
    "ImageFolderDataModule",
    "ImageTextDataModule",
    "InfoNCELoss",
    "KNNMonitor",
    "LastCheckpoint",
    "LinearHead",
    "MemoryQueue",
    "MoCo",
    "MultiDomainDataModule",
    "NTXentLoss",
    "OnlineLinearProbe",
    "ProjectionHead",
    "SimCLR",
    "SimCLRProjectionHead",
    "SmallConvNet",
    "VisionDataModule",
    "ZeroShotEvaluator",
    "__version__",
    "build_policy",
    "clip_loss",
    "cosine_momentum",
    "create_backbone",
    "dann_coeff",
    "freeze_param_groups",
    "grad_reverse",
    "info_nce_loss",
    "inject_adapters",
    "inject_lora",
    "list_backbones",
    "merge_adapters",
    "merge_lora",
    "nt_xent_loss",
    "set_domain",
    "update_momentum",
    "zero_shot_classifier",
]
