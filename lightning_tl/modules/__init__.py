"""LightningModules: each composes a backbone, a head and a loss; see each class's overridable steps."""

from lightning_tl.modules.adapter_resnet import AdapterResNet
from lightning_tl.modules.cdan import CDAN
from lightning_tl.modules.classifier import ImageClassifier
from lightning_tl.modules.clip import CLIP
from lightning_tl.modules.dann import DANN
from lightning_tl.modules.mcc import MCC
from lightning_tl.modules.moco import MoCo
from lightning_tl.modules.simclr import SimCLR

__all__ = ["CDAN", "CLIP", "DANN", "MCC", "AdapterResNet", "ImageClassifier", "MoCo", "SimCLR"]
