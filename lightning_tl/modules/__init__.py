"""LightningModules: each composes a backbone, a head and a loss; see each class's overridable steps."""

from lightning_tl.modules.adapter_resnet import AdapterResNet
from lightning_tl.modules.backbone_module import BackboneModule
from lightning_tl.modules.barlow_twins import BarlowTwins
from lightning_tl.modules.byol import BYOL
from lightning_tl.modules.cdan import CDAN
from lightning_tl.modules.classifier import ImageClassifier
from lightning_tl.modules.clip import CLIP
from lightning_tl.modules.dann import DANN
from lightning_tl.modules.dino import DINO
from lightning_tl.modules.finetune_module import FineTuneModule
from lightning_tl.modules.mcc import MCC
from lightning_tl.modules.moco import MoCo
from lightning_tl.modules.pretrain_module import PaperOptimizer, PretrainModule
from lightning_tl.modules.simclr import SimCLR
from lightning_tl.modules.simsiam import SimSiam
from lightning_tl.modules.vicreg import VICReg

__all__ = [
    "BYOL",
    "CDAN",
    "CLIP",
    "DANN",
    "DINO",
    "MCC",
    "AdapterResNet",
    "BackboneModule",
    "BarlowTwins",
    "FineTuneModule",
    "ImageClassifier",
    "MoCo",
    "PaperOptimizer",
    "PretrainModule",
    "SimCLR",
    "SimSiam",
    "VICReg",
]
