"""Layers and parameter surgery: momentum encoders and queues, gradient reversal, small backbones."""

from lightning_tl.nn.convnet import SmallConvNet
from lightning_tl.nn.grl import GradientReversal, dann_coeff, grad_reverse
from lightning_tl.nn.momentum import MemoryQueue, cosine_momentum, update_momentum
from lightning_tl.nn.shuffle_bn import shuffle_permutation, shuffled_forward

__all__ = [
    "GradientReversal",
    "MemoryQueue",
    "SmallConvNet",
    "cosine_momentum",
    "dann_coeff",
    "grad_reverse",
    "shuffle_permutation",
    "shuffled_forward",
    "update_momentum",
]
