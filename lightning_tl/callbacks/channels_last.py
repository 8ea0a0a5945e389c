"""Run a LightningModule's convolutions in the channels-last (NHWC) memory format.

On GPUs with tensor cores, cuDNN's fastest convolution kernels read and write NHWC; in NCHW every
convolution pays for layout transposes. Measured on an H100 (BENCHMARKS.md, table g): a bf16 SimCLR
step ran 2.3x (ResNet-18, 32 px) and 1.8x (ResNet-50, 224 px) faster with channels-last than with
bf16 autocast alone. Lightning has no switch for it; this callback is that switch, for any module.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class ChannelsLast(Callback):
    """Convert every 4-D parameter and buffer of the module to ``torch.channels_last`` before fitting.

    Done in ``setup``, before the optimizers are built, on the same ``Parameter`` objects (so
    optimizer state, checkpoints and ``state_dict`` keys are unchanged; a checkpoint saved in
    either format loads in the other). Inputs need no conversion: a convolution whose weight is
    channels-last returns a channels-last output for an NCHW input, and the rest of the network
    follows. On the CPU the format is supported but rarely faster; use it on GPUs.

    Example::

        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[ChannelsLast()], precision="bf16-mixed", logger=False)
    """

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
