"""Random-number-generator state in checkpoints, so a resumed run draws the same numbers.

Lightning's Trainer does not store RNG states. Every rank's state is kept (they differ under DDP);
on resume each rank takes back its own.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as torch_dist
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from lightning_tl import distributed as dist

KEY = "lightning_tl_rng_states"


def _plain(states: dict[str, Any]) -> dict[str, Any]:
    """Numpy's state as tensors and numbers, so ``torch.load(weights_only=True)`` accepts the checkpoint."""
    name, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}


def _numpy(states: dict[str, Any]) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)}


def save_rng_states(checkpoint: dict[str, Any]) -> None:
    """Store every rank's RNG states under ``checkpoint[KEY]`` (a collective under DDP)."""
    states = _plain(_collect_rng_states(include_cuda=torch.cuda.is_available()))
    if dist.is_distributed():
        gathered: list[Any] = [None] * dist.world_size()
        torch_dist.all_gather_object(gathered, states)
        checkpoint[KEY] = gathered
    else:
        checkpoint[KEY] = [states]


def load_rng_states(checkpoint: dict[str, Any]) -> None:
    """Restore this rank's RNG states from ``checkpoint[KEY]`` if it holds them."""
    states = checkpoint.get(KEY)
    if not states:
        return
    if len(states) != dist.world_size():
        warnings.warn(
            f"checkpoint holds RNG states of {len(states)} processes but this run has {dist.world_size()}; "
            "random draws after resume will differ from the original run.",
            stacklevel=2,
        )
    _set_rng_states(_numpy(states[dist.rank() % len(states)]))


class RNGCheckpoint(L.LightningModule):
    """Mixin: every checkpoint carries the RNG states of all ranks, and loading one restores this rank's.

    Put it before ``LightningModule``: ``class ImageClassifier(RNGCheckpoint, L.LightningModule)``.
    """

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        save_rng_states(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        load_rng_states(checkpoint)
