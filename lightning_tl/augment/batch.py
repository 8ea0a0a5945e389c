"""The seeded batch: images that still await their random augmentation, with the seed of each.

Train items that are augmented on the device (batched SSL views, mixup/CutMix/noise) travel from
the loader to the model as a :class:`SeededBatch`; the datamodule's ``on_after_batch_transfer`` hook
turns it into views or mixed images on the device, drawing every random number from the seeds, so
the result does not depend on the worker count, on the process or on the global RNG.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from lightning_tl.augment.counter_rng import mix_seed


class SeededBatch(NamedTuple):
    """``(images, labels, seeds)``: one item, or (collated) a batch, awaiting on-device augmentation.

    ``images``: uint8 (C, H, W) for on-device views, float (C, H, W) for batch mixing; batched
    (B, C, H, W). ``labels``: int (B,). ``seeds``: the per-sample seeds (B,) int64 of
    :class:`~lightning_tl.datamodules.sampling.SeededSampler`.
    """

    images: Tensor
    labels: Any
    seeds: Any


def batch_seed(seeds: Tensor) -> int:
    """One seed from a batch's sample seeds (B,): fixed by which samples the batch holds, in order."""
    return mix_seed(*(int(s) for s in seeds.tolist()))
