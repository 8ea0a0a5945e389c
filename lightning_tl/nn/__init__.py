"""Layers and parameter surgery: momentum encoders and queues."""

from lightning_tl.nn.momentum import MemoryQueue, cosine_momentum, update_momentum
from lightning_tl.nn.shuffle_bn import shuffle_permutation, shuffled_forward

__all__ = [
    "MemoryQueue",
    "cosine_momentum",
    "shuffle_permutation",
    "shuffled_forward",
    "update_momentum",
]
