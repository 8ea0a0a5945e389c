"""Losses as pure functions on tensors, each with a thin ``nn.Module`` wrapper; one loss per file.

Contrastive (NT-Xent, InfoNCE, CLIP), non-contrastive self-supervised (negative cosine of
BYOL/SimSiam, Barlow Twins, VICReg, DINO) and domain adaptation (MCC, and the entropy weights it
shares with CDAN+E). Shapes: N is the per-rank batch, W the world size, D the embedding dimension,
K the DINO head's output dimension, C the number of classes. Losses with ``gather=True`` equal,
value and gradient after DDP's averaging, the single-process loss on the global batch.
"""

from lightning_tl.losses.barlow_twins import BARLOW_TWINS_EPS, BarlowTwinsLoss, barlow_twins_loss
from lightning_tl.losses.clip import CLIPLoss, clip_loss
from lightning_tl.losses.dino import DINOLoss, dino_loss, dino_teacher_temperature, update_dino_center
from lightning_tl.losses.info_nce import InfoNCELoss, info_nce_loss
from lightning_tl.losses.mcc import ENTROPY_EPS, MCCLoss, certainty_weights, mcc_loss
from lightning_tl.losses.negative_cosine import NegativeCosineLoss, negative_cosine_loss
from lightning_tl.losses.nt_xent import NTXentLoss, nt_xent_loss
from lightning_tl.losses.vicreg import VICREG_EPS, VICREG_GAMMA, VICRegLoss, vicreg_loss

__all__ = [
    "BARLOW_TWINS_EPS",
    "ENTROPY_EPS",
    "VICREG_EPS",
    "VICREG_GAMMA",
    "BarlowTwinsLoss",
    "CLIPLoss",
    "DINOLoss",
    "InfoNCELoss",
    "MCCLoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "VICRegLoss",
    "barlow_twins_loss",
    "certainty_weights",
    "clip_loss",
    "dino_loss",
    "dino_teacher_temperature",
    "info_nce_loss",
    "mcc_loss",
    "negative_cosine_loss",
    "nt_xent_loss",
    "update_dino_center",
    "vicreg_loss",
]
